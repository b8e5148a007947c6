"""Bootstrap confidence intervals over test utterances and seeds, plain and paired.

Every scored metric is a ratio of per-utterance sums, ``sum(num) / sum(den)``: corpus WER (word errors
/ reference words), accuracy (correct / 1), frame-weighted cosine (sum of cosines / frames).  A cell has
one such vector pair per seed.  Its value is the mean over seeds; its CI is a two-way bootstrap that
resamples test utterances (the same draw for every seed: they share the test set) and seeds, so it
covers both the head's training noise and the test set's sampling noise.  A difference against a
reference row is paired by utterance (both rows see the same utterance draw) with the seeds of each row
resampled independently (seed k of one encoder has nothing to do with seed k of another).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class SeedScores:
    """One seed's per-utterance numerators and denominators, aligned to ``ids``."""

    ids: list[str]
    num: np.ndarray
    den: np.ndarray

    @property
    def value(self) -> float:
        d = float(self.den.sum())
        return float(self.num.sum()) / d if d else float("nan")


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    per_seed: list[float]

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "per_seed": self.per_seed}


def _aligned(seeds: Sequence[SeedScores], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """[U, S] numerators and denominators in the order of ``ids``."""
    nums, dens = [], []
    for s in seeds:
        if s.ids != ids:
            pos = {u: i for i, u in enumerate(s.ids)}
            missing = [u for u in ids if u not in pos]
            if missing:
                raise ValueError(f"seeds scored different test utterances (e.g. {missing[:3]} missing)")
            order = np.array([pos[u] for u in ids])
            nums.append(s.num[order])
            dens.append(s.den[order])
        else:
            nums.append(s.num)
            dens.append(s.den)
    return np.stack(nums, 1).astype(np.float64), np.stack(dens, 1).astype(np.float64)


def _utterance_weights(rng: np.random.Generator, n_utts: int, n_boot: int) -> np.ndarray:
    """[B, U] multiplicities of a resample of the utterances (with replacement)."""
    return rng.multinomial(n_utts, np.full(n_utts, 1.0 / n_utts), size=n_boot).astype(np.float64)


def _boot_values(w: np.ndarray, num: np.ndarray, den: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B] bootstrap values: per seed ratio on the utterance draw, averaged over a seed resample."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = (w @ num) / (w @ den)  # [B, S]
    S = num.shape[1]
    pick = rng.integers(0, S, size=(w.shape[0], S)) if S > 1 else np.zeros((w.shape[0], 1), dtype=int)
    return np.nanmean(np.take_along_axis(per_seed, pick, 1), 1)


def interval(seeds: Sequence[SeedScores], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean over seeds and its two-way bootstrap CI."""
    ids = seeds[0].ids
    num, den = _aligned(seeds, ids)
    rng = np.random.default_rng(seed)
    vals = _boot_values(_utterance_weights(rng, len(ids), n_boot), num, den, rng)
    a = (1 - confidence) / 2
    per_seed = [s.value for s in seeds]
    return Interval(float(np.mean(per_seed)), float(np.nanquantile(vals, a)), float(np.nanquantile(vals, 1 - a)), per_seed)


@dataclass
class Difference:
    mean: float  # row - reference
    low: float
    high: float
    p_sign: float  # bootstrap share of differences on the other side of zero from ``mean`` (x2, capped at 1)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "p": self.p_sign}


def paired_difference(
    row: Sequence[SeedScores], ref: Sequence[SeedScores], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
) -> Difference:
    """``row - ref``, paired by utterance (common ids only), seeds resampled independently per row."""
    common = [u for u in ref[0].ids if u in set(row[0].ids)]
    if not common:
        raise ValueError("the two rows share no test utterance")
    rn, rd = _aligned(row, common)
    fn, fd = _aligned(ref, common)
    rng = np.random.default_rng(seed)
    w = _utterance_weights(rng, len(common), n_boot)
    diff = _boot_values(w, rn, rd, rng) - _boot_values(w, fn, fd, rng)
    a = (1 - confidence) / 2
    mean = float(np.mean([s.value for s in row]) - np.mean([s.value for s in ref]))
    other = np.mean(diff <= 0) if mean > 0 else np.mean(diff >= 0)
    return Difference(mean, float(np.nanquantile(diff, a)), float(np.nanquantile(diff, 1 - a)), float(min(1.0, 2 * other)))


def repeat_interval(values: Sequence[float], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Median of repeated measurements (timings) and a bootstrap CI of the median."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = np.median(v[rng.integers(0, len(v), size=(n_boot, len(v)))], 1)
    a = (1 - confidence) / 2
    return Interval(float(np.median(v)), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), list(map(float, v)))
