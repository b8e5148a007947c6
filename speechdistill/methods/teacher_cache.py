"""An on-disk cache of teacher target layers: run the teacher once, train many students or epochs.

Entries are keyed by utterance id, crop offset and crop length (``Batch.ids``/``offsets``/``lengths``),
so a cached target is the teacher's output on exactly that audio, never on a neighbouring crop.  Each
batch the teacher runs on becomes one fp16 safetensors shard (``shards/r{rank}-{uuid}-{n}.safetensors``,
tensor names ``{id}@{offset}+{length}/L{layer}``, valid frames only); the index is rebuilt from the
shard headers, so a crash loses at most the shard being written (written atomically) and nothing
needs repair.  ``cache_info.json`` pins the teacher (a fingerprint of its config, weights and dtype)
and the layers: a cache made by another teacher is refused, not silently reused.

When it pays: several students distilled from one teacher on the same crops, or many epochs of a small
corpus without random crops (``data.crop_seconds=0``).  With random crops every epoch draws new crops
of the utterances longer than the crop, so the cache grows each epoch and hits only the shorter ones;
``estimate_cache`` says so before training starts.  Values are stored in fp16 (relative error about
5e-4 against fp32 targets), read back as fp32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from speechdistill import SAMPLE_RATE
from speechdistill.config import ConfigError
from speechdistill.data.batch import Batch
from speechdistill.models.frames import config_output_lengths
from speechdistill.utils.io import atomic_save_safetensors, atomic_write_json, read_json

log = logging.getLogger(__name__)

INFO_FILE = "cache_info.json"
FORMAT = 1


def entry_key(uid: str, offset: int, length: int) -> str:
    return f"{uid}@{offset}+{length}"


def teacher_fingerprint(teacher: torch.nn.Module, layers: list[int], dtype: str) -> dict:
    """What the cached values depend on: the teacher's config and weights (a checksum per tensor), the
    dtype it computes in and the layers."""
    h = hashlib.sha256()
    cfg = getattr(teacher, "config", None)
    h.update((cfg.to_json_string(use_diff=False) if cfg is not None else type(teacher).__name__).encode())
    for name, t in teacher.state_dict().items():
        if t.is_floating_point():
            h.update(f"{name}:{tuple(t.shape)}:{float(t.detach().double().sum().cpu()):.12e}".encode())
    return {"format": FORMAT, "teacher": h.hexdigest()[:16], "dtype": dtype, "layers": list(layers)}


@dataclass
class CacheEstimate:
    utterances: int
    bytes_per_epoch: int  # fp16 targets of one pass over the data (valid frames only)
    cropped: int  # utterances longer than the crop: new crops (new entries) every epoch

    def describe(self, num_layers: int, hidden: int) -> str:
        msg = (f"teacher target cache: {self.utterances} utterances x {num_layers} layers x {hidden} x fp16 = "
               f"{self.bytes_per_epoch / 1e9:.2f} GB per epoch")
        if self.cropped:
            msg += (f"; {self.cropped} utterances are longer than data.crop_seconds, so every epoch adds new crops "
                    "of them (the cache hits only repeated crops: use data.crop_seconds=0 or several students)")
        return msg


def estimate_cache(sizes: list[int], crop_samples: int, config, num_layers: int, hidden: int) -> CacheEstimate:
    """``sizes``: 16 kHz samples per utterance (before cropping)."""
    frames = 0
    cropped = 0
    for n in sizes:
        if crop_samples and n > crop_samples:
            cropped += 1
            n = crop_samples
        frames += int(config_output_lengths(config, n))
    return CacheEstimate(len(sizes), frames * num_layers * hidden * 2, cropped)


class TeacherTargetCache:
    """``get(batch)``: the cached targets of every item, or None if any is missing; ``put(...)`` stores."""

    def __init__(self, root: str | Path, fingerprint: dict, config, rank: int = 0):
        self.root = Path(root)
        self.shards = self.root / "shards"
        self.shards.mkdir(parents=True, exist_ok=True)
        self.layers = list(fingerprint["layers"])
        self.config = config
        self.rank = rank
        info = self.root / INFO_FILE
        if info.is_file():
            old = read_json(info)
            if old != json.loads(json.dumps(fingerprint)):
                raise ConfigError(
                    f"speed.teacher_cache_dir={self.root} holds targets of another teacher, dtype or layer set "
                    f"({old} vs now {fingerprint}); use another directory or delete it"
                )
        else:
            atomic_write_json(info, fingerprint)
        self.index: dict[str, Path] = {}
        self._seen: set[str] = set()
        self._written = 0
        self.hits = self.misses = 0
        self._scan()
        log.info("teacher target cache %s: %d entries", self.root, len(self.index))

    def _scan(self) -> None:
        from safetensors import safe_open

        for entry in os.scandir(self.shards):
            if not entry.name.endswith(".safetensors") or entry.name in self._seen:
                continue
            self._seen.add(entry.name)
            path = Path(entry.path)
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                    self.index[name.rsplit("/", 1)[0]] = path

    def _keys(self, batch: Batch) -> list[str] | None:
        if batch.offsets is None or len(batch.ids) != batch.wav.shape[0]:
            return None  # items not identifiable (synthetic batch): never cached
        return [entry_key(u, int(o), int(n)) for u, o, n in zip(batch.ids, batch.offsets.tolist(), batch.lengths.tolist())]

    def get(self, batch: Batch) -> list[torch.Tensor] | None:
        """fp32 targets [B, T, D] per layer (zero on padded frames), on the batch's device; or None."""
        from safetensors import safe_open

        keys = self._keys(batch)
        if keys is None:
            return None
        if any(k not in self.index for k in keys):
            self._scan()  # another rank or an earlier run may have written them since
            if any(k not in self.index for k in keys):
                self.misses += 1
                return None
        T = int(config_output_lengths(self.config, batch.wav.shape[1]))
        by_shard: dict[Path, list[int]] = defaultdict(list)
        for b, k in enumerate(keys):
            by_shard[self.index[k]].append(b)
        out: list[torch.Tensor] | None = None
        for shard, items in by_shard.items():
            with safe_open(str(shard), framework="pt") as f:
                for b in items:
                    for j, layer in enumerate(self.layers):
                        t = f.get_tensor(f"{keys[b]}/L{layer}")
                        if out is None:
                            out = [torch.zeros(len(keys), T, t.shape[-1]) for _ in self.layers]
                        out[j][b, : t.shape[0]] = t.float()
        self.hits += 1
        return [t.to(batch.wav.device, non_blocking=True) for t in out]

    def put(self, batch: Batch, targets: list[torch.Tensor], frame_lengths: torch.Tensor) -> None:
        keys = self._keys(batch)
        if keys is None:
            return
        lengths = frame_lengths.tolist()
        tensors = {}
        for b, k in enumerate(keys):
            if k in self.index:
                continue
            for layer, t in zip(self.layers, targets):
                tensors[f"{k}/L{layer}"] = t[b, : lengths[b]].to(torch.float16)
        if not tensors:
            return
        # Unique across ranks, processes and cache objects: a shard is never overwritten.
        path = self.shards / f"r{self.rank}-{uuid.uuid4().hex[:12]}-{self._written:07d}.safetensors"
        atomic_save_safetensors(path, tensors)
        self._written += 1
        self._seen.add(path.name)
        for name in tensors:
            self.index[name.rsplit("/", 1)[0]] = path


def audio_sizes(manifest: str, min_seconds: float = 0.0, max_seconds: float = 0.0) -> list[int]:
    """16 kHz samples per utterance of a manifest (for ``estimate_cache``), without reading audio."""
    from speechdistill.data.dataset import load_utterances

    utts, _ = load_utterances(manifest, "skip", min_seconds, max_seconds)
    return [round(u.num_samples * SAMPLE_RATE / u.sample_rate) for u in utts]
