"""Training checkpoints as safetensors + JSON: no pickles anywhere.

Layout of ``out/checkpoints/step_000100/``: ``model.safetensors``, ``optimizer.safetensors`` +
``optimizer.json`` (tensors and the rest of ``state_dict()`` split apart), ``rng_rank{r}.safetensors`` +
``rng_rank{r}.json``, ``trainer_state.json`` (step, data position, scheduler, best metric).  A checkpoint
is written into a temporary folder and renamed, so a crash leaves either a whole checkpoint or none.

Reading is defensive (a disk can still truncate or garble files): ``checkpoint_candidates`` lists
checkpoints newest first and ``load_checkpoint`` raises ``CorruptCheckpoint`` with the reason for any
unreadable part, so the engine can fall back to the previous intact one.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechdistill.errors import ModelLoadError
from speechdistill.utils.io import (
    atomic_save_safetensors,
    atomic_write_json,
    load_safetensors,
    read_json,
    replace_dir,
    writing,
)

log = logging.getLogger(__name__)

CKPT_PREFIX = "step_"
POINTER = "latest.json"
# What trainer_state.json must hold for a resume (the engine writes more).
TRAINER_STATE_KEYS = {"step": int, "epoch": int, "batch_in_epoch": int, "scheduler": dict}


class CorruptCheckpoint(Exception):
    """A checkpoint folder that cannot be read back whole (the message says which file and why)."""


def optimizer_to_files(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, st in opt_state["state"].items():
        plain_state[str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v
            else:
                plain_state[str(pid)][k] = v
    return tensors, {"state": plain_state, "param_groups": opt_state["param_groups"]}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    if not isinstance(meta.get("state"), dict) or not isinstance(meta.get("param_groups"), list):
        raise TypeError("optimizer.json lacks state/param_groups")
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in meta["state"].items()}
    for key, t in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = t
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": _to_json(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    random.setstate(_from_json(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def _to_json(obj):
    return [_to_json(o) for o in obj] if isinstance(obj, (tuple, list)) else obj


def _from_json(obj):
    return tuple(_from_json(o) for o in obj) if isinstance(obj, list) else obj


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model_state: dict[str, torch.Tensor] | None,
    optimizer_state: dict | None,
    trainer_state: dict,
    rank: int,
    is_main: bool,
    wait,
    keep: int = 2,
) -> Path:
    """All ranks call this (each saves its RNG); rank 0 writes model, optimizer and trainer state."""
    final = ckpt_root / f"{CKPT_PREFIX}{step:08d}"
    # One fixed name: every rank writes its RNG state into the same folder (the run holds the out_dir lock).
    tmp = ckpt_root / f".{CKPT_PREFIX}{step:08d}.tmp"
    try:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            with writing(tmp):
                tmp.mkdir(parents=True)
        wait()
        rng_t, rng_m = rng_state()
        atomic_save_safetensors(tmp / f"rng_rank{rank}.safetensors", rng_t)
        atomic_write_json(tmp / f"rng_rank{rank}.json", rng_m)
        if is_main:
            assert model_state is not None and optimizer_state is not None
            atomic_save_safetensors(tmp / "model.safetensors", model_state)
            opt_t, opt_m = optimizer_to_files(optimizer_state)
            atomic_save_safetensors(tmp / "optimizer.safetensors", opt_t)
            atomic_write_json(tmp / "optimizer.json", opt_m)
        wait()
        if is_main:
            # Written last: a folder with trainer_state.json is complete.
            atomic_write_json(tmp / "trainer_state.json", trainer_state)
            with writing(final):
                replace_dir(tmp, final)
            atomic_write_json(ckpt_root / POINTER, {"checkpoint": final.name, "step": step})
            prune_checkpoints(ckpt_root, keep, step)
            log.info("saved checkpoint %s", final)
    except BaseException:
        if is_main:  # a failed write (disk full, ...) leaves no half folder behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    wait()
    return final


def checkpoint_step(path: Path) -> int | None:
    """The step of a ``step_XXXXXXXX`` folder name, or None for anything else."""
    name = path.name
    if not name.startswith(CKPT_PREFIX):
        return None
    try:
        return int(name[len(CKPT_PREFIX):])
    except ValueError:
        return None


def prune_checkpoints(root: Path, keep: int, current: int) -> None:
    """Keep the ``keep`` newest checkpoints up to step ``current`` (numeric order, never ``current``
    itself); folders of later steps (left by a broken checkpoint a resume fell back from) are not
    counted and not touched."""
    ckpts = sorted((s, p) for p in root.glob(f"{CKPT_PREFIX}*") if p.is_dir()
                   and (s := checkpoint_step(p)) is not None and s <= current)
    for s, old in ckpts[:-keep] if keep > 0 else []:
        if s != current:
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_candidates(ckpt_root: Path) -> list[Path]:
    """Every checkpoint folder, newest step first (``latest.json`` is only a hint: it can be stale or
    garbled, and the folders themselves say what they are)."""
    if not ckpt_root.is_dir():
        return []
    found = [(s, p) for p in ckpt_root.glob(f"{CKPT_PREFIX}*") if p.is_dir() and (s := checkpoint_step(p)) is not None]
    pointer = ckpt_root / POINTER
    if pointer.exists():
        try:
            name = read_json(pointer, expect=dict).get("checkpoint")
            if not (ckpt_root / str(name)).is_dir():
                log.warning("%s points at %s, which does not exist; using the checkpoint folders", pointer, name)
        except ValueError as e:
            log.warning("ignoring %s (%s); using the checkpoint folders", pointer, e)
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint folder (with trainer_state.json), or None."""
    return next((p for p in checkpoint_candidates(ckpt_root) if (p / "trainer_state.json").is_file()), None)


def load_checkpoint(path: Path, rank: int) -> dict[str, Any]:
    """Everything in checkpoint ``path`` for ``rank``; CorruptCheckpoint names the unreadable part."""
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        raise CorruptCheckpoint(f"{state_file} is missing (the checkpoint was never completed)")
    try:
        ts = read_json(state_file, expect=dict)
    except ValueError as e:
        raise CorruptCheckpoint(str(e)) from None
    bad = [k for k, tp in TRAINER_STATE_KEYS.items() if not isinstance(ts.get(k), tp) or isinstance(ts.get(k), bool)]
    if bad:
        raise CorruptCheckpoint(f"{state_file} lacks valid {', '.join(bad)}")
    world = ts.get("world_size", 1)
    for r in range(world if isinstance(world, int) and world > 0 else 1):
        for suffix in (".safetensors", ".json"):
            if not (path / f"rng_rank{r}{suffix}").is_file():
                raise CorruptCheckpoint(f"{path / f'rng_rank{r}{suffix}'} is missing")
    try:
        model = load_safetensors(path / "model.safetensors")
        opt = optimizer_from_files(load_safetensors(path / "optimizer.safetensors"),
                                   read_json(path / "optimizer.json", expect=dict))
        rng_t = load_safetensors(path / f"rng_rank{rank}.safetensors")
        rng_m = read_json(path / f"rng_rank{rank}.json", expect=dict)
    except (ModelLoadError, ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpoint(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    if "torch" not in rng_t or not {"python", "numpy"} <= set(rng_m):
        raise CorruptCheckpoint(f"{path / f'rng_rank{rank}.json'}: incomplete RNG state")
    return {"model": model, "optimizer": opt, "trainer_state": ts, "rng": (rng_t, rng_m)}
