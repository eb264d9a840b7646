"""The Plan: every value of a recipe resolved, derived and explicit."""
