"""Training checkpoints as safetensors + JSON: no pickles anywhere.

Layout of ``out/checkpoints/step_000100/``: ``model.safetensors``, ``optimizer.safetensors`` +
``optimizer.json`` (tensors and the rest of ``state_dict()`` split apart), ``rng_rank{r}.safetensors`` +
``rng_rank{r}.json``, ``trainer_state.json`` (step, data position, scheduler, best metric).  A checkpoint
is written into a temporary folder and renamed, so a crash leaves either a whole checkpoint or none.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechdistill.utils.io import atomic_save_safetensors, atomic_write_json, load_safetensors, read_json

log = logging.getLogger(__name__)

CKPT_PREFIX = "step_"


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
    tmp = ckpt_root / f".{CKPT_PREFIX}{step:08d}.tmp"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
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
        atomic_write_json(tmp / "trainer_state.json", trainer_state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_json(ckpt_root / "latest.json", {"checkpoint": final.name, "step": step})
        _prune_old(ckpt_root, keep)
        log.info("saved checkpoint %s", final)
    wait()
    return final


def _prune_old(root: Path, keep: int) -> None:
    ckpts = sorted(p for p in root.glob(f"{CKPT_PREFIX}*") if p.is_dir())
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "latest.json"
    if pointer.is_file():
        p = ckpt_root / read_json(pointer)["checkpoint"]
        if (p / "trainer_state.json").is_file():
            return p
    # Fall back to the newest complete folder (e.g. pointer lost).
    ckpts = sorted(p for p in ckpt_root.glob(f"{CKPT_PREFIX}*") if (p / "trainer_state.json").is_file())
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: Path, rank: int) -> dict[str, Any]:
    rng_file = path / f"rng_rank{rank}.safetensors"
    if not rng_file.is_file():
        raise FileNotFoundError(
            f"{path}: no RNG state for rank {rank}; resume with the same number of processes as the original run"
        )
    return {
        "model": load_safetensors(path / "model.safetensors"),
        "optimizer": optimizer_from_files(load_safetensors(path / "optimizer.safetensors"), read_json(path / "optimizer.json")),
        "trainer_state": read_json(path / "trainer_state.json"),
        "rng": (load_safetensors(rng_file), json.loads((path / f"rng_rank{rank}.json").read_text())),
    }
