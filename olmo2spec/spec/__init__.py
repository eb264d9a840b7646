"""The recipe language: TOML files -> composed tree -> typed `Recipe` -> checks and lint."""
