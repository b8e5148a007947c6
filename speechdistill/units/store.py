"""Unit labels of a manifest: one integer per teacher frame per utterance, in safetensors shards.

Layout of a label folder::

    units.json                  what the labels are (teacher, layer, k-means fingerprint, frame hop,
                                manifest), whether they are complete, the shard list
    labels-00000.safetensors    "labels" (all utterances' frames, concatenated, int16/int32) and
                                "lengths" (frames per utterance); the utterance ids in the metadata

Shards are written atomically as labelling proceeds, so an interrupted run loses at most one shard
and a rerun continues after the last one (``LabelWriter``).  Frame counts follow the teacher's CNN
(``models.frames.config_output_lengths``): label ``t`` belongs to the frame that starts at sample
``t * hop`` of the utterance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechdistill.units.errors import UnitsError
from speechdistill.utils.io import atomic_save_safetensors, atomic_write_json, read_json

log = logging.getLogger(__name__)

INDEX_FILE = "units.json"
SHARD_NAME = "labels-{:05d}.safetensors"
FORMAT = "speechdistill-units-1"
# Settings that must match for a rerun to continue an existing folder.
IDENTITY_KEYS = ("teacher", "layer", "kmeans_fingerprint", "k", "hop", "manifest")


def _read_shard(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            labels = f.get_tensor("labels").numpy()
            lengths = f.get_tensor("lengths").numpy()
    except (OSError, KeyError, ValueError) as e:
        raise UnitsError(f"{path}: unreadable unit label shard ({e})") from None
    ids = json.loads(meta.get("ids", "[]"))
    if len(ids) != len(lengths) or int(lengths.sum()) != len(labels):
        raise UnitsError(f"{path}: shard is inconsistent ({len(ids)} ids, {len(lengths)} lengths, "
                         f"{len(labels)} labels)")
    return ids, labels, lengths


class LabelWriter:
    """Appends utterances' labels to a label folder, shard by shard; continues an existing folder made
    with the same settings (``IDENTITY_KEYS``) and refuses one made with other settings."""

    def __init__(self, out_dir: str | Path, meta: dict[str, Any], shard_size: int = 1000):
        self.out_dir = Path(out_dir)
        self.meta = {"format": FORMAT, **meta}
        self.shard_size = shard_size
        self.shards: list[str] = []
        self.done: set[str] = set()
        self.frames = 0
        index = self.out_dir / INDEX_FILE
        if index.is_file():
            old = read_json(index)
            diff = [k for k in IDENTITY_KEYS if old.get(k) != self.meta.get(k)]
            if diff:
                shown = ", ".join(f"{k}: {old.get(k)!r} there, {self.meta.get(k)!r} now" for k in diff)
                raise UnitsError(f"{self.out_dir} holds unit labels made with other settings ({shown}); "
                                 "choose another output folder or delete it")
            for name in old.get("shards", []):
                ids, labels, _ = _read_shard(self.out_dir / name)
                self.shards.append(name)
                self.done.update(ids)
                self.frames += len(labels)
            if self.done:
                log.info("%s: continuing after %d labelled utterance(s) in %d shard(s)", self.out_dir,
                         len(self.done), len(self.shards))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._pending: list[tuple[str, np.ndarray]] = []
        self._write_index(complete=False)

    def _write_index(self, complete: bool, total: int | None = None) -> None:
        atomic_write_json(self.out_dir / INDEX_FILE, {
            **self.meta, "complete": complete, "utterances": len(self.done), "frames": self.frames,
            "shards": self.shards, **({"manifest_utterances": total} if total is not None else {}),
        })

    def add(self, utt_id: str, labels: np.ndarray) -> bool:
        """Queue one utterance; returns True when that completed (and wrote) a shard."""
        self._pending.append((utt_id, np.asarray(labels)))
        if len(self._pending) >= self.shard_size:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        if not self._pending:
            return
        ids = [u for u, _ in self._pending]
        lengths = np.array([len(x) for _, x in self._pending], dtype=np.int64)
        flat = np.concatenate([x for _, x in self._pending]) if lengths.sum() else np.zeros(0)
        dtype = torch.int16 if self.meta.get("k", 0) <= np.iinfo(np.int16).max else torch.int32
        name = SHARD_NAME.format(len(self.shards))
        atomic_save_safetensors(self.out_dir / name, {
            "labels": torch.from_numpy(flat.astype(np.int64)).to(dtype), "lengths": torch.from_numpy(lengths),
        }, metadata={"ids": json.dumps(ids)})
        self.shards.append(name)
        self.done.update(ids)
        self.frames += int(lengths.sum())
        self._pending = []
        self._write_index(complete=False)

    def finish(self, total: int) -> None:
        self.flush()
        self._write_index(complete=True, total=total)


class UnitLabels:
    """A complete label folder in memory: ``labels[utt_id]`` -> int64 numpy array, one label a frame."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if not index.is_file():
            raise UnitsError(f"{self.folder}: no unit labels ({INDEX_FILE} is missing); make them with "
                             "`speechdistill units teacher=... manifest=... out=...`")
        self.meta = read_json(index)
        if self.meta.get("format") != FORMAT:
            raise UnitsError(f"{index}: not a unit label index written by speechdistill")
        if not self.meta.get("complete"):
            raise UnitsError(f"{self.folder}: the unit labels are incomplete ({self.meta.get('utterances', 0)} "
                             "utterances so far); rerun the same `speechdistill units` command to finish them")
        self._where: dict[str, tuple[int, int, int]] = {}
        self._arrays: list[np.ndarray] = []
        for s, name in enumerate(self.meta["shards"]):
            ids, labels, lengths = _read_shard(self.folder / name)
            self._arrays.append(labels)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else []
            for u, st, n in zip(ids, starts, lengths):
                self._where[u] = (s, int(st), int(n))

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def hop(self) -> int:
        return int(self.meta["hop"])

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._where

    def __getitem__(self, utt_id: str) -> np.ndarray:
        try:
            s, start, n = self._where[utt_id]
        except KeyError:
            raise UnitsError(f"no unit labels for utterance {utt_id!r} in {self.folder} (labelled manifest: "
                             f"{self.meta.get('manifest')}); label this manifest with `speechdistill units`") from None
        return self._arrays[s][start : start + n].astype(np.int64)
