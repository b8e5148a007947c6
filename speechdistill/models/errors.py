"""Model errors, importable without torch (the CLI maps them to clean messages)."""

from speechdistill.errors import ModelLoadError

__all__ = ["ModelLoadError"]
