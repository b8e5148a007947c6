"""``--resume``: choosing the checkpoint to continue from, and refusing the ones a run cannot continue.

Checkpoints are written atomically, but disks and people still damage them (a truncated file, a
garbled JSON, a deleted RNG file): such a checkpoint is skipped for the previous intact one, with a
warning.  A checkpoint written by another method, another model shape or another number of processes
is refused instead (older ones were written by the same run and would be no better), naming the
config keys that changed since ``run_config.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from speechdistill.errors import CheckpointError, ModelLoadError
from speechdistill.train.checkpoint import CorruptCheckpoint, checkpoint_candidates, load_checkpoint
from speechdistill.utils.io import atomic_write_text, read_json

log = logging.getLogger(__name__)

# Settings a resumed run may change without changing what the checkpoint holds.
FREE_TO_CHANGE = ("train.steps", "train.stop_after", "train.progress", "train.log_every", "train.val_every",
                  "train.save_every", "train.keep_checkpoints", "data.num_workers")
FIX = "resume with the original settings, or start again with --overwrite or another out_dir"


def newest_usable_checkpoint(ckpt_root: Path, rank: int) -> tuple[Path, dict] | None:
    """(folder, state) of the newest checkpoint that reads back whole; None if there is none at all.
    Raises CheckpointError when checkpoints exist but none is readable."""
    candidates = checkpoint_candidates(ckpt_root)
    if not candidates:
        return None
    skipped: list[str] = []
    for ckpt in candidates:
        try:
            state = load_checkpoint(ckpt, rank)
        except CorruptCheckpoint as e:
            log.warning("--resume: cannot use %s: %s", ckpt.name, e)
            skipped.append(f"{ckpt.name} ({e})")
            continue
        if skipped:
            log.warning("--resume: fell back to %s, the newest intact checkpoint (skipped %s)", ckpt.name,
                        ", ".join(s.split(" ", 1)[0] for s in skipped))
        return ckpt, state
    raise CheckpointError(
        f"--resume: no usable checkpoint in {ckpt_root}: {'; '.join(skipped)}. Start the run again with "
        "--overwrite (or into another out_dir)"
    )


def check_resumable(
    ckpt: Path, state: dict, method: str, num_processes: int, model: nn.Module, optimizer, changes: str = "",
) -> None:
    """Refuse (CheckpointError) a checkpoint of another method, process count, model or optimizer layout."""
    ts = state["trainer_state"]
    why = f" (config changes since that run: {changes})" if changes else ""
    if ts.get("method", method) != method:
        raise CheckpointError(f"--resume: {ckpt} was written by method {ts.get('method')!r}, this run is {method!r}"
                              f"{why}; {FIX}")
    world = ts.get("world_size", 1)
    if world != num_processes:
        raise CheckpointError(f"--resume: {ckpt} was written by {world} process(es), this run has {num_processes}; "
                              "resume with the same number of processes")
    from speechdistill.models.weights import check_state_dict_match

    own, saved = model.state_dict(), state["model"]
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in saved.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    try:
        check_state_dict_match(str(ckpt / "model.safetensors"), set(own) - set(saved), set(saved) - set(own),
                               mismatched)
    except ModelLoadError as e:
        raise CheckpointError(f"--resume: this run's model differs from the checkpoint's{why}: {e}; {FIX}") from None
    if len(state["optimizer"]["param_groups"]) != len(optimizer.state_dict()["param_groups"]):
        raise CheckpointError(f"--resume: {ckpt}: the optimizer's parameter groups differ{why}; {FIX}")


def config_changes(saved_config: Path, run_config: dict[str, Any] | None) -> str:
    """``"gendistiller.decoder_layers 1 -> 2"``: what differs from the run_config.json on disk."""
    if run_config is None or not saved_config.is_file():
        return ""
    try:
        old = _flat(read_json(saved_config, expect=dict))
    except ValueError:
        return ""
    new = _flat(run_config)
    diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k) and k not in FREE_TO_CHANGE]
    return ", ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")


def truncate_log(log_path: Path, step: int) -> None:
    """Drop records past the resumed ``step`` from a JSONL log: the resumed run redoes those steps, and
    would otherwise log them twice."""
    if not log_path.is_file():
        return
    kept, dropped = [], 0
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record_step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            dropped += 1  # a line cut short by the interruption
            continue
        if isinstance(record_step, int) and record_step > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic_write_text(log_path, "".join(line + "\n" for line in kept))
        log.info("%s: dropped %d record(s) after step %d (this run redoes those steps)", log_path.name, dropped, step)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
