"""Model errors, importable without torch (the CLI maps them to clean messages)."""


class ModelLoadError(OSError):
    """A model directory or hub id that cannot be loaded, with the reason and what to do."""
