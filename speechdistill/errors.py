"""The project's expected failures, importable without torch.

Every error a user can cause (a bad recipe value, a corrupt model, an unusable output folder, a
full disk, ...) is a ``SpeechDistillError``: its message names the file, key or value and says what
to do, and the CLI (``speechdistill.cli.main``) prints it as one line and exits with ``exit_code``
(the traceback only under ``--log-level DEBUG``).  Anything else reaching the CLI is a bug.

The subclasses keep the built-in base an older caller may catch (``ValueError``, ``OSError``).
"""

from __future__ import annotations


class SpeechDistillError(Exception):
    """Base of every expected failure."""

    exit_code = 2


class ConfigError(SpeechDistillError, ValueError):
    """A recipe, override or option value that does not fit the typed config."""


class BadInputError(SpeechDistillError, ValueError):
    """Bad user data (manifests, audio, transcripts), with an actionable message."""


class ModelLoadError(SpeechDistillError, OSError):
    """A model directory, hub id or file that cannot be loaded, with the reason and what to do."""


class CheckpointError(SpeechDistillError):
    """A run that cannot be resumed from its checkpoints (the reason says why)."""


class OutputError(SpeechDistillError, OSError):
    """An output folder or file that cannot be used or written (used, busy, not a folder, disk full)."""


class OutputBusyError(OutputError):
    """Another run is writing into the same output folder."""


class TrainingError(SpeechDistillError, RuntimeError):
    """Training that cannot go on (e.g. a non-finite loss)."""


def describe_os_error(e: OSError, path: object = None) -> str:
    """``"PATH: No space left on device"``: an OSError as one line naming the file it concerns."""
    where = path if path is not None else (e.filename if e.filename is not None else None)
    what = e.strerror or str(e) or type(e).__name__
    if e.filename2 is not None:
        what = f"{what} ({e.filename} -> {e.filename2})"
    return f"{where}: {what}" if where is not None else what
