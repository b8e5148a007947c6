"""What a training run may do with its output folder: claim it, refuse it, or replace an old run in it.

A fresh run into a folder that holds an earlier run would mix the two: checkpoint pruning and
``--resume`` would pick the old run's files, and its model would be overwritten without a word.  So
a fresh run refuses a used folder unless told ``--overwrite`` (replace the old run) or ``--resume``
(continue it), and ``output_lock`` keeps a second, concurrent run out.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from speechdistill.errors import ConfigError, OutputError
from speechdistill.utils.io import ensure_dir, writing
from speechdistill.utils.lock import is_main_process, output_lock

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MODEL = "model"
# Files and folders a run writes: their presence means the folder holds a run.
RUN_FILES = (CHECKPOINTS, "train_log.jsonl", "train_summary.json", "run_config.json", MODEL)
# What --overwrite removes before the new run starts: the old run's progress.  Its model/ stays until
# the new run replaces it (atomically), so a failed new run still leaves the last good model.
STALE_ON_OVERWRITE = (CHECKPOINTS, "train_log.jsonl", "train_summary.json", "run_config.json")


def describe_run(out_dir: Path) -> str:
    """``"checkpoints up to step 150, a model/"`` for the messages."""
    parts = []
    steps = []
    for p in (out_dir / CHECKPOINTS).glob("step_*"):
        try:
            steps.append(int(p.name.split("_", 1)[1]))
        except ValueError:
            pass
    if steps:
        parts.append(f"checkpoints up to step {max(steps)}")
    if (out_dir / MODEL).exists():
        parts.append(f"a {MODEL}/")
    if not parts:
        parts = [", ".join(n for n in RUN_FILES if (out_dir / n).exists())]
    return ", ".join(parts)


def prepare_run_dir(out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Check (and with ``overwrite``, clear) ``out_dir`` for a new run; call it while holding the lock.

    Every process of a multi-process run calls it (the refusal must stop them all); only the main
    one removes anything."""
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ConfigError(f"--resume continues the run in {out_dir} and --overwrite replaces it: give one of them")
    ensure_dir(out_dir, "out_dir")
    used = [n for n in RUN_FILES if (out_dir / n).exists()]
    if not used or resume:
        return out_dir
    if not overwrite:
        raise OutputError(
            f"out_dir {out_dir} already holds a run ({describe_run(out_dir)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another out_dir"
        )
    if is_main_process():
        log.warning("--overwrite: replacing the run in %s (%s); its %s/ stays until this run writes its own",
                    out_dir, describe_run(out_dir), MODEL)
        for name in STALE_ON_OVERWRITE:
            p = out_dir / name
            with writing(p):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
    return out_dir


@contextmanager
def claim_run_dir(out_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Lock ``out_dir`` for this run, then ``prepare_run_dir`` it; the lock is released on exit."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"out_dir {out_dir} exists and is not a folder; choose another path")
    with output_lock(out_dir, "out_dir"):
        yield prepare_run_dir(out_dir, resume, overwrite)
