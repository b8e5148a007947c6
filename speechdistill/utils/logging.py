"""Logging set-up shared by the CLI and library (the library only ever calls getLogger)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int = "INFO", log_file: str | Path | None = None) -> None:
    root = logging.getLogger()
    root.setLevel(level if isinstance(level, int) else level.upper())
    for h in list(root.handlers):
        if getattr(h, "_speechdistill", False):
            root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        h._speechdistill = True  # type: ignore[attr-defined]
        root.addHandler(h)
    # Third-party chatter drowns our progress output.
    for noisy in ("urllib3", "filelock", "matplotlib", "PIL", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers draws a progress bar for every checkpoint it loads or writes; read at its import.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def add_file_handler(log_file: str | Path) -> logging.Handler:
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(log_file)
    h.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    h._speechdistill = True  # type: ignore[attr-defined]
    logging.getLogger().addHandler(h)
    return h
