"""Layer stacks of a frozen encoder, extracted once per (encoder, manifest) and cached on disk.

The encoder is frozen, so its hidden states are the same in every epoch of every head: extracting
them once makes heads (and their seeds) cheap.  Two kinds, written in one pass:

- frame-level states [states, frames, hidden] per utterance (CTC heads, layer fidelity), in
  safetensors shards of at most ``SHARD_BYTES`` (float16 by default), read lazily;
- mean-pooled states [states, hidden] per utterance (utterance-level heads), float32, in memory.

The states are what ``encode`` returns (index 0 = input to the first layer).  Stable-layer-norm models
apply a final LayerNorm after the last layer: heads see that normalised output as the last state (as
``CTCModel`` and SUPERB do), fidelity the raw layer output (as distillation targets do), so such models
store the normalised output as one extra state.

Cache folder: ``CACHE/<model fingerprint>-<manifest hash>/`` with ``meta.json`` (written last, atomically:
a folder without it is incomplete and is rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from speechdistill import SAMPLE_RATE
from speechdistill.data.batch import make_batches
from speechdistill.data.dataset import AudioDataset, collate, load_utterances, raise_if_bad
from speechdistill.utils.io import atomic_dir, atomic_save_safetensors, atomic_write_json, load_safetensors

log = logging.getLogger(__name__)

SHARD_BYTES = 256 << 20
META = "meta.json"
POOLED = "pooled.safetensors"
FORMAT_VERSION = 1


def manifest_hash(manifest: str | Path) -> str:
    """Path and content: the same lines elsewhere point at other audio (paths are relative)."""
    p = Path(manifest).resolve()
    h = hashlib.sha256(str(p).encode())
    h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class FeatureSet:
    """A cached extraction; ``ids`` in manifest order."""

    dir: Path
    meta: dict

    @property
    def ids(self) -> list[str]:
        return self.meta["ids"]

    @property
    def frames(self) -> list[int]:
        return self.meta["frames"]

    @property
    def num_states(self) -> int:
        """States a head sees (``num_output_layers + 1``)."""
        return self.meta["num_states"]

    @property
    def hidden_size(self) -> int:
        return self.meta["hidden_size"]

    @property
    def has_frames(self) -> bool:
        return self.meta["has_frames"]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def pooled(self) -> torch.Tensor:
        """[N, S, D] float32 mean-pooled head states."""
        if not hasattr(self, "_pooled"):
            self._pooled = load_safetensors(self.dir / POOLED)["pooled"].float()
        return self._pooled

    def _stored(self, i: int) -> torch.Tensor:
        if not self.has_frames:
            raise RuntimeError(f"{self.dir}: frame-level states were not extracted")
        from safetensors import safe_open

        handles = self.__dict__.setdefault("_handles", {})
        shard = self.meta["shards"][i]
        if shard not in handles:
            handles[shard] = safe_open(str(self.dir / shard), framework="pt")
        return handles[shard].get_tensor(str(i)).float()

    def head_states(self, i: int) -> torch.Tensor:
        """[S, T, D]: the states a head weighs (last = final output, normalised for stable-LN models)."""
        x = self._stored(i)
        if self.meta["extra_final"]:
            x = torch.cat([x[:-2], x[-1:]], 0)
        return x

    def raw_states(self, i: int) -> torch.Tensor:
        """[S, T, D]: the layer outputs as distillation targets see them."""
        x = self._stored(i)
        return x[:-1] if self.meta["extra_final"] else x


def load_feature_set(path: Path) -> FeatureSet | None:
    meta_file = path / META
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if meta.get("format_version") != FORMAT_VERSION:
        return None
    return FeatureSet(path, meta)


def cached_features(
    load_encoder: Callable[[], nn.Module], manifest: str, cache_root: Path, key: str, frames: bool,
    dtype: str = "float16", max_batch_seconds: float = 60.0, max_batch_size: int = 16, desc: str = "features",
) -> FeatureSet:
    """The cache entry for (``key`` = model fingerprint, ``manifest``); when missing (or when frame-level
    states are wanted and only pooled ones were stored) it is extracted with ``load_encoder()``."""
    path = cache_root / f"{key}-{manifest_hash(manifest)}"
    fs = load_feature_set(path)
    if fs is not None and (not frames or (fs.has_frames and fs.meta["dtype"] == dtype)):
        return fs
    extract_features(load_encoder(), manifest, path, frames, dtype, max_batch_seconds, max_batch_size, desc)
    return load_feature_set(path)


@torch.inference_mode()
def extract_features(
    encoder: nn.Module, manifest: str, path: Path, frames: bool, dtype: str = "float16",
    max_batch_seconds: float = 60.0, max_batch_size: int = 16, desc: str = "features",
) -> None:
    utts, _ = load_utterances(manifest)
    index = {u.id: i for i, u in enumerate(utts)}
    ds = AudioDataset(utts)
    sizes = [ds.item_samples(i) for i in range(len(ds))]
    budget = max(int(max_batch_seconds * SAMPLE_RATE), max(sizes))
    batches = make_batches(sizes, budget, max_batch_size, shuffle=False, sort=True)
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate)
    store_dtype = getattr(torch, dtype)
    n = len(utts)
    pooled: list[torch.Tensor | None] = [None] * n
    n_frames = [0] * n
    shard_of: list[str | None] = [None] * n
    extra_final: bool | None = None
    num_raw = hidden = 0
    with atomic_dir(path) as tmp:
        pending: dict[str, torch.Tensor] = {}
        pending_bytes, shard_no = 0, 0

        def flush() -> None:
            nonlocal pending, pending_bytes, shard_no
            if pending:
                name = f"frames-{shard_no:05d}.safetensors"
                atomic_save_safetensors(tmp / name, pending)
                for k in pending:
                    shard_of[int(k)] = name
                pending, pending_bytes, shard_no = {}, 0, shard_no + 1

        for batch in tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True):
            raise_if_bad(batch, "error")
            out = encoder.encode(batch.wav, batch.lengths)
            states = [h.float() for h in out.hidden_states]
            last = out.last_hidden_state
            if extra_final is None:
                extra_final = last is not None and last.shape == states[-1].shape and not torch.equal(last, states[-1])
                num_raw, hidden = len(states), states[0].shape[-1]
            stack = torch.stack(states, 1)  # [B, S, T, D]
            final = last.float() if extra_final else None
            fl = out.frame_lengths.cpu()
            for b, uid in enumerate(batch.ids):
                i, t = index[uid], int(fl[b])
                raw = stack[b, :, :t]
                head = torch.cat([raw[:-1], final[b : b + 1, :t]], 0) if extra_final else raw
                pooled[i] = head.mean(1)
                n_frames[i] = t
                if frames:
                    stored = torch.cat([raw, final[b : b + 1, :t]], 0) if extra_final else raw
                    pending[str(i)] = stored.to(store_dtype).contiguous()
                    pending_bytes += pending[str(i)].numel() * pending[str(i)].element_size()
                    if pending_bytes >= SHARD_BYTES:
                        flush()
        flush()
        atomic_save_safetensors(tmp / POOLED, {"pooled": torch.stack(pooled)})
        atomic_write_json(tmp / META, {
            "format_version": FORMAT_VERSION, "manifest": str(Path(manifest).resolve()),
            "ids": [u.id for u in utts], "frames": n_frames,
            "audio_seconds": [u.num_samples / u.sample_rate for u in utts],
            "num_states": num_raw, "hidden_size": hidden, "extra_final": bool(extra_final),
            "has_frames": frames, "dtype": dtype if frames else None, "shards": shard_of,
        })
    log.debug("cached %d utterances of %s in %s", n, manifest, path)
