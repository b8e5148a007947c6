"""Datasets, duration-bucketed batching and collation.

Batching is ours rather than accelerate's: a batch sampler that is a pure function of (seed, epoch,
rank) lets a resumed run start at the exact batch it stopped at (accelerate's ``skip_first_batches``
has known bugs past the first epoch), and sharding by rank keeps multi-process runs disjoint.

Keeping a GPU fed: worker processes decode ahead (``num_workers``, ``prefetch_factor``) and stay alive
across epochs (``persistent_workers``; the epoch travels with each index, so their dataset copies need
no update), batches land in pinned memory for asynchronous copies (``pin_memory``), ragged batches are
padded up to a multiple of ``pad_to_multiple_seconds`` so ``torch.compile`` sees few shapes, and
pre-decoded shards (``speechdistill data predecode``) are read without decoding FLAC again, only the
crop's samples.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset

from speechdistill import SAMPLE_RATE
from speechdistill.config import ConfigError, check_ranges
from speechdistill.data.audio import MIN_SAMPLES, load_utterance
from speechdistill.data.batch import Batch, make_batches, pad_waveforms
from speechdistill.data.errors import BadAudioError, ManifestError
from speechdistill.data.manifest import Utterance, iter_manifest_lines, length_mismatch

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    train_manifest: str = ""
    dev_manifest: str | None = None
    # Padded audio per batch (batch size x longest item), the knob that bounds memory.
    max_batch_seconds: float = 60.0
    max_batch_size: int = 32
    # Random crops for training (DistilHuBERT: 250k samples = 15.6 s); 0 disables.
    crop_seconds: float = 0.0
    # Utterances outside [min_seconds, max_seconds] are dropped when the manifest is read (0 = no limit).
    min_seconds: float = 0.0
    max_seconds: float = 0.0
    num_workers: int = 0
    # Batches each worker prepares ahead (DataLoader prefetch_factor; only with num_workers > 0).
    prefetch_factor: int = 2
    # Keep worker processes between epochs (only with num_workers > 0).
    persistent_workers: bool = True
    # Page-locked batches for asynchronous host-to-GPU copies (ignored without a GPU).
    pin_memory: bool = True
    # Shape bucketing: a batch with padding is padded further, up to a multiple of this many seconds,
    # so that torch.compile sees a few lengths instead of one per batch. 0 = off. Batches without
    # padding (e.g. equal random crops) are left alone: they take the mask-free attention path.
    pad_to_multiple_seconds: float = 0.0
    on_bad_audio: Literal["error", "skip"] = "error"
    # Limit for validation: at most this many dev batches (0 = all).
    max_dev_batches: int = 0
    # Dev utterances longer than this (seconds; 0 = no limit) are refused (on_long_dev=error, naming the
    # file) or left out (skip): attention is quadratic in length, so one hour-long file would stall the
    # first validation for hours and need tens of GB.
    max_dev_seconds: float = 60.0
    on_long_dev: Literal["error", "skip"] = "error"

    def validate(self) -> None:
        check_ranges(
            "data", self, max_batch_seconds=">0", max_batch_size=">=1", crop_seconds=">=0", min_seconds=">=0",
            max_seconds=">=0", num_workers=">=0", max_dev_batches=">=0", max_dev_seconds=">=0",
            pad_to_multiple_seconds=">=0", prefetch_factor=">=1",
            hints={"max_dev_batches": "0 = every dev batch", "max_dev_seconds": "0 = no limit",
                   "max_seconds": "0 = no limit", "crop_seconds": "0 = no crops"},
        )
        shortest = MIN_SAMPLES / SAMPLE_RATE
        if 0 < self.crop_seconds < shortest:
            raise ConfigError(
                f"data.crop_seconds={self.crop_seconds:g}: crops must be at least {shortest:g} s (the CNN's receptive "
                "field) or 0 (no crops)"
            )
        if self.max_seconds and self.min_seconds > self.max_seconds:
            raise ConfigError(
                f"data.min_seconds={self.min_seconds:g} is above data.max_seconds={self.max_seconds:g}: no utterance "
                "would be left"
            )


def load_utterances(
    manifest: str, on_bad: str = "error", min_seconds: float = 0.0, max_seconds: float = 0.0
) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """Read a manifest applying the bad-input policy and duration filters. Returns (utts, skipped)."""
    utts: list[Utterance] = []
    skipped: list[tuple[str, str]] = []
    filtered = 0
    for line_no, item in iter_manifest_lines(manifest):
        if isinstance(item, ManifestError):
            if on_bad == "error":
                raise item
            skipped.append((f"{manifest}:{line_no}", item.problem))
            continue
        if item.num_samples == 0:
            if on_bad == "error":
                raise BadAudioError(item.path, "empty audio (num_samples is 0 in the manifest)")
            skipped.append((item.path, "empty audio"))
            continue
        if (min_seconds and item.duration < min_seconds) or (max_seconds and item.duration > max_seconds):
            filtered += 1
            continue
        utts.append(item)
    if filtered:
        log.info("%s: %d utterance(s) outside [%s, %s] s left out", manifest, filtered, min_seconds, max_seconds or "inf")
    if skipped:
        log.warning("%s: skipped %d bad manifest line(s)", manifest, len(skipped))
        for where, why in skipped:
            log.warning("  skipped %s: %s", where, why)
    if not utts:
        raise ManifestError(manifest, None, "no usable utterances")
    return utts, skipped


class AudioDataset(Dataset):
    """Loads, validates and optionally crops utterances. Crops are a function of (seed, epoch, index)
    so that a resumed run sees the same crops as an uninterrupted one.  Items are looked up by index,
    or by (epoch, index) pairs (what the training loader sends, so persistent workers see the epoch).
    An item is (utterance, waveform or None, problem or None, crop offset in samples)."""

    def __init__(
        self,
        utts: Sequence[Utterance],
        crop_samples: int = 0,
        on_bad_audio: str = "error",
        seed: int = 0,
    ):
        self.utts = list(utts)
        self.crop_samples = crop_samples
        self.on_bad_audio = on_bad_audio
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.utts)

    def item_samples(self, i: int) -> int:
        """Approximate samples after resampling and cropping (for batching)."""
        u = self.utts[i]
        n = math.ceil(u.num_samples * SAMPLE_RATE / u.sample_rate)
        return min(n, self.crop_samples) if self.crop_samples else n

    def crop_start(self, epoch: int, i: int, num_samples: int) -> int:
        rng = random.Random(hash((self.seed, epoch, i)) & 0xFFFFFFFF)
        return rng.randrange(0, num_samples - self.crop_samples + 1)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        u = self.utts[i]
        start = 0
        try:
            # A 16 kHz shard knows its exact length: read just the crop.
            exact = u.offset is not None and u.sample_rate == SAMPLE_RATE
            if exact and self.crop_samples and u.num_samples > self.crop_samples:
                start = self.crop_start(epoch, i, u.num_samples)
                wav = load_utterance(u, start, self.crop_samples)
            else:
                wav = load_utterance(u)
                problem = length_mismatch(u, wav.shape[0])
                if problem:
                    raise BadAudioError(u.path, problem)
        except BadAudioError as e:
            # Returned, not raised: an exception in a worker process reaches the caller as torch's generic
            # RuntimeError; the main process raises the clean error (``raise_if_bad``).
            if self.on_bad_audio != "error":
                log.warning("skipping %s: %s", e.path, e.problem)
            return (u, None, e.problem, 0)
        if self.crop_samples and wav.shape[0] > self.crop_samples:
            start = self.crop_start(epoch, i, wav.shape[0])
            wav = wav[start : start + self.crop_samples]
        return (u, wav, None, start)


def split_long(
    utts: list[Utterance], max_seconds: float, policy: str, manifest: str, knob: str
) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """Apply a per-utterance length limit: ``error`` refuses the first too-long utterance (naming the file,
    its duration and ``knob``), ``skip`` leaves them out; returns (kept, [(path, reason)])."""
    if not max_seconds:
        return utts, []
    kept, skipped = [], []
    for u in utts:
        if u.duration <= max_seconds:
            kept.append(u)
            continue
        reason = f"{u.duration:.1f} s long, above the {max_seconds:g} s limit ({knob})"
        if policy == "error":
            raise BadAudioError(
                u.path, f"{reason} in {manifest}: raise the limit, leave such files out with the skip policy, "
                "or cut the file"
            )
        skipped.append((u.path, reason))
    if skipped:
        log.warning("%s: left out %d utterance(s) longer than %g s (%s), e.g. %s", manifest, len(skipped),
                    max_seconds, knob, skipped[0][0])
    return kept, skipped


def raise_if_bad(batch: Batch, on_bad_audio: str) -> None:
    """Under on_bad_audio=error, the first bad file of a batch stops the run with its name and reason."""
    if batch.skipped and on_bad_audio == "error":
        raise BadAudioError(*batch.skipped[0])


def collate(items, pad_multiple: int = 0) -> Batch:
    """Items of ``AudioDataset`` -> a padded ``Batch``; with ``pad_multiple`` (samples) a batch that has
    padding is padded up to a multiple of it (a batch of equal lengths is left unpadded)."""
    good = [(u, w, off) for u, w, _, off in items if w is not None]
    skipped = [(u.path, why) for u, w, why, _ in items if w is None]
    if not good:
        return Batch(torch.zeros(0, MIN_SAMPLES), torch.zeros(0, dtype=torch.long), [], [], skipped)
    wav, lengths = pad_waveforms([w for _, w, _ in good])
    if pad_multiple > 1 and bool((lengths < wav.shape[1]).any()):
        wav = torch.nn.functional.pad(wav, (0, -wav.shape[1] % pad_multiple))
    return Batch(wav, lengths, [u.id for u, _, _ in good], [u.text for u, _, _ in good], skipped,
                 torch.tensor([off for _, _, off in good], dtype=torch.long))


class BucketBatchSampler:
    """Duration-bucketed batches, deterministic per (seed, epoch), sharded across ranks, resumable."""

    def __init__(
        self,
        dataset: AudioDataset,
        max_batch_seconds: float,
        max_batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.dataset = dataset
        self.max_batch_samples = int(max_batch_seconds * SAMPLE_RATE)
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        sizes = [dataset.item_samples(i) for i in range(len(dataset))]
        too_long = [dataset.utts[i] for i, n in enumerate(sizes) if n > self.max_batch_samples]
        if too_long:
            raise ConfigError(
                f"{len(too_long)} training utterance(s) are longer than data.max_batch_seconds={max_batch_seconds:g} "
                f"(e.g. {too_long[0].path}, {too_long[0].duration:.1f} s); raise it, set data.crop_seconds, or leave "
                "them out with data.max_seconds"
            )
        self.sizes = sizes

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch
        self.dataset.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        batches = make_batches(
            self.sizes, self.max_batch_samples, self.max_batch_size, self.shuffle, self.seed + 1000003 * self.epoch
        )
        if self.world_size > 1:
            # Every rank must run the same number of steps, or DDP hangs on the last collective.
            per_rank = len(batches) // self.world_size
            if per_rank == 0:
                raise ConfigError(
                    f"only {len(batches)} batch(es) for {self.world_size} processes: use more data or smaller batches"
                )
            batches = batches[self.rank : per_rank * self.world_size : self.world_size]
        return batches

    def __len__(self) -> int:
        return len(self._all_batches())

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all_batches()[self.start_batch :]


class _EpochTagged:
    """The sampler's batches as (epoch, index) pairs: worker processes that outlive an epoch
    (persistent workers) then crop for the right epoch without being told."""

    def __init__(self, sampler: BucketBatchSampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(epoch, i) for i in batch]


def loader_kwargs(cfg: DataConfig, device_type: str = "cpu") -> dict:
    """DataLoader options for feeding ``device_type`` (workers, prefetch, pinned memory)."""
    kw: dict = {"num_workers": cfg.num_workers, "pin_memory": cfg.pin_memory and device_type == "cuda"}
    if cfg.num_workers > 0:
        kw.update(prefetch_factor=cfg.prefetch_factor, persistent_workers=cfg.persistent_workers)
    return kw


def build_train_loader(
    cfg: DataConfig, seed: int = 0, rank: int = 0, world_size: int = 1, device_type: str = "cpu"
) -> tuple[DataLoader, BucketBatchSampler, list[tuple[str, str]]]:
    utts, skipped = load_utterances(cfg.train_manifest, cfg.on_bad_audio, cfg.min_seconds, cfg.max_seconds)
    ds = AudioDataset(utts, int(cfg.crop_seconds * SAMPLE_RATE), cfg.on_bad_audio, seed)
    sampler = BucketBatchSampler(ds, cfg.max_batch_seconds, cfg.max_batch_size, True, seed, rank, world_size)
    loader = DataLoader(
        ds, batch_sampler=_EpochTagged(sampler),
        collate_fn=functools.partial(collate, pad_multiple=round(cfg.pad_to_multiple_seconds * SAMPLE_RATE)),
        # Its own generator: a new iterator must not draw from the global RNG, or a resumed run's
        # dropout masks would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(seed),
        **loader_kwargs(cfg, device_type),
    )
    return loader, sampler, skipped


class EvalLoader:
    """Batches in manifest order (no crop); counts what was skipped under on_bad_audio=skip."""

    def __init__(
        self,
        manifest: str,
        max_batch_seconds: float = 60.0,
        max_batch_size: int = 32,
        num_workers: int = 0,
        on_bad_audio: str = "error",
        max_batches: int = 0,
        max_item_seconds: float = 0.0,
        on_long: str = "error",
        long_knob: str = "max_item_seconds",
    ):
        utts, self.skipped = load_utterances(manifest, on_bad_audio)
        utts, too_long = split_long(utts, max_item_seconds, on_long, manifest, long_knob)
        self.skipped.extend(too_long)
        if not utts:
            raise ManifestError(manifest, None, "no utterance is left after the length limit")
        self.dataset = AudioDataset(utts, 0, on_bad_audio)
        self.manifest = manifest
        self.num_workers = num_workers
        self.max_batches = max_batches
        sizes = [self.dataset.item_samples(i) for i in range(len(utts))]
        self.batches = make_batches(sizes, int(max_batch_seconds * SAMPLE_RATE), max_batch_size, False, sort=False)
        if max_batches:
            self.batches = self.batches[:max_batches]

    @property
    def utterances(self) -> list[Utterance]:
        return self.dataset.utts

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        loader = DataLoader(
            self.dataset, batch_sampler=self.batches, collate_fn=collate, num_workers=self.num_workers
        )
        for batch in loader:
            raise_if_bad(batch, self.dataset.on_bad_audio)
            if batch.skipped:
                self.skipped.extend(batch.skipped)
            if len(batch):
                yield batch


def build_eval_loader(
    manifest: str,
    max_batch_seconds: float = 60.0,
    max_batch_size: int = 32,
    num_workers: int = 0,
    on_bad_audio: str = "error",
    max_batches: int = 0,
    max_item_seconds: float = 0.0,
    on_long: str = "error",
    long_knob: str = "max_item_seconds",
) -> EvalLoader:
    """Batches of ``manifest`` in order; utterances longer than ``max_item_seconds`` (0 = no limit) are
    refused or skipped per ``on_long`` (``long_knob`` names the setting in messages)."""
    return EvalLoader(manifest, max_batch_seconds, max_batch_size, num_workers, on_bad_audio, max_batches,
                      max_item_seconds, on_long, long_knob)
