"""Logging set-up shared by the CLI and library (the library only ever calls getLogger)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ProgressAwareHandler(logging.StreamHandler):
    """A stream handler that lifts any live tqdm bar out of the way, so a log line (an error above
    all) never lands on the same line as a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            msg = self.format(record)
            with tqdm.external_write_mode(file=self.stream, nolock=False):
                self.stream.write(msg + self.terminator)
                self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own contract: report and carry on
            self.handleError(record)


def close_progress_bars() -> None:
    """End every live tqdm bar on its own line (before an error message is printed)."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001, S110 - a bar half torn down by the failure that got us here
            pass


def setup_logging(level: str | int = "INFO", log_file: str | Path | None = None) -> None:
    root = logging.getLogger()
    root.setLevel(level if isinstance(level, int) else level.upper())
    for h in list(root.handlers):
        if getattr(h, "_speechdistill", False):
            root.removeHandler(h)
    handlers: list[logging.Handler] = [ProgressAwareHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        h._speechdistill = True  # type: ignore[attr-defined]
        root.addHandler(h)
    # Library warnings become log lines (one line each, same format) instead of raw stderr text.
    logging.captureWarnings(True)
    # Third-party chatter drowns our progress output.
    for noisy in ("urllib3", "filelock", "matplotlib", "PIL", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers draws a progress bar for every checkpoint it loads or writes; read at its import.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # imported already (by a command module): the variables came too late
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def add_file_handler(log_file: str | Path) -> logging.Handler:
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(log_file)
    h.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    h._speechdistill = True  # type: ignore[attr-defined]
    logging.getLogger().addHandler(h)
    return h
