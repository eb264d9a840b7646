"""olmo2spec: compile one TOML recipe of an OLMo 2 model into a runnable launch bundle."""

__version__ = "0.1.0"

__all__ = ["__version__"]
