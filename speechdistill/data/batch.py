"""A batch of waveforms, padding, and the one batching function (length-sorted, padded-size budget)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from speechdistill import SAMPLE_RATE


@dataclass
class Batch:
    wav: torch.Tensor  # [B, S] float32, zero-padded
    lengths: torch.Tensor  # [B] long, valid samples
    ids: list[str] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    # (path, reason) of utterances dropped from this batch under on_bad_audio=skip
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # [B] long: where each item starts in its utterance (random crops), in 16 kHz samples; None = unknown
    # (every item starts at 0).  With ids and lengths it names exactly which audio an item is (the teacher
    # target cache's key); frame-level targets stored per utterance (unit labels) are aligned with it.
    offsets: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        # non_blocking: an asynchronous copy from pinned memory (a plain copy otherwise).
        return Batch(self.wav.to(device, non_blocking=True), self.lengths.to(device, non_blocking=True),
                     self.ids, self.texts, self.skipped, self.offsets)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def audio_seconds(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE


def pad_waveforms(waves: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D waveforms -> right-zero-padded float32 [B, S] and their lengths [B] (long)."""
    lengths = torch.tensor([int(w.shape[0]) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0, dtype=torch.float32)
    for i, w in enumerate(waves):
        out[i, : w.shape[0]] = torch.as_tensor(w, dtype=torch.float32)
    return out, lengths


def make_batches(
    sizes: Sequence[int], max_batch_samples: int, max_batch_size: int, shuffle: bool, seed: int = 0,
    sort: bool = True,
) -> list[list[int]]:
    """Group indices into batches whose padded size (count x longest) stays within the budget.

    Sorting by length keeps padding small; with shuffle, lengths get a little noise so batches differ
    between epochs, and the batch order is shuffled. ``sort=False`` keeps the given order (evaluation).
    """
    rng = np.random.default_rng(seed)
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    keys = sizes_arr * (1 + 0.1 * rng.random(len(sizes))) if shuffle else sizes_arr
    order = np.argsort(keys, kind="stable") if sort else np.arange(len(sizes))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for idx in order.tolist():
        n = int(sizes[idx])
        new_max = max(cur_max, n)
        if cur and (new_max * (len(cur) + 1) > max_batch_samples or len(cur) >= max_batch_size):
            batches.append(cur)
            cur, new_max = [], n
        cur.append(idx)
        cur_max = new_max
    if cur:
        batches.append(cur)
    if shuffle:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches
