"""Cached layer stacks as training data for the engine: datasets, batches and loaders with the same
contract as the audio ones (a resumable ``BucketBatchSampler``, batches with ``to``/``ids``/``skipped``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from speechdistill import SAMPLE_RATE
from speechdistill.data.batch import make_batches
from speechdistill.data.dataset import BucketBatchSampler
from speechdistill.data.manifest import Utterance
from speechdistill.evaluation.features import FeatureSet


@dataclass
class FeatureBatch:
    states: torch.Tensor  # [B, S, T, D] frame-level (zero-padded) or [B, S, D] pooled
    frame_lengths: torch.Tensor  # [B]
    ids: list[str]
    texts: list[str | None]
    labels: torch.Tensor | None  # [B] class indices (utterance-level tasks)
    seconds: float = 0.0  # audio the batch stands for
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to(self, device: torch.device | str) -> FeatureBatch:
        return FeatureBatch(self.states.to(device), self.frame_lengths.to(device), self.ids, self.texts,
                            None if self.labels is None else self.labels.to(device), self.seconds, self.skipped)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def audio_seconds(self) -> float:
        return self.seconds


class FeatureDataset(Dataset):
    """Items of one cached extraction; ``utts`` are the manifest's utterances in the cache's order."""

    def __init__(self, features: FeatureSet, utts: list[Utterance], pooled: bool, labels: list[int] | None = None):
        if [u.id for u in utts] != features.ids:
            raise RuntimeError(f"{features.dir}: cached ids do not match the manifest (stale cache?)")
        self.features = features
        self.utts = utts
        self.pooled = pooled
        self.labels = labels
        self.epoch = 0  # BucketBatchSampler sets it

    def __len__(self) -> int:
        return len(self.utts)

    def item_samples(self, i: int) -> int:
        """Batch budget unit: audio samples for frame-level items, 1 for pooled ones (count only)."""
        return 1 if self.pooled else int(self.utts[i].duration * SAMPLE_RATE)

    def __getitem__(self, i: int):
        x = self.features.pooled[i] if self.pooled else self.features.head_states(i)
        label = None if self.labels is None else self.labels[i]
        u = self.utts[i]
        return x, self.features.frames[i], u.id, u.text, label, u.duration


def collate_features(items) -> FeatureBatch:
    xs, frames, ids, texts, labels, secs = zip(*items)
    if xs[0].ndim == 3:  # [S, T, D]: pad time
        S, _, D = xs[0].shape
        out = xs[0].new_zeros(len(xs), S, max(frames), D)
        for b, x in enumerate(xs):
            out[b, :, : x.shape[1]] = x
    else:
        out = torch.stack(xs)
    lab = None if labels[0] is None else torch.tensor(labels, dtype=torch.long)
    return FeatureBatch(out, torch.tensor(frames, dtype=torch.long), list(ids), list(texts), lab, float(sum(secs)))


def train_loader(ds: FeatureDataset, max_batch_seconds: float, max_batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> tuple[DataLoader, BucketBatchSampler]:
    budget = 1e9 if ds.pooled else max_batch_seconds
    sampler = BucketBatchSampler(ds, budget, max_batch_size, True, seed, rank, world_size)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_features,
                        generator=torch.Generator().manual_seed(seed))
    return loader, sampler


class EvalFeatures:
    """Batches in a fixed order (dev and test)."""

    def __init__(self, ds: FeatureDataset, max_batch_seconds: float, max_batch_size: int):
        self.ds = ds
        sizes = [ds.item_samples(i) for i in range(len(ds))]
        budget = 1 << 60 if ds.pooled else max(int(max_batch_seconds * SAMPLE_RATE), max(sizes))
        self.batches = make_batches(sizes, budget, max_batch_size, shuffle=False, sort=not ds.pooled)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[FeatureBatch]:
        yield from DataLoader(self.ds, batch_sampler=self.batches, collate_fn=collate_features)
