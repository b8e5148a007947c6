"""Analytic MAC model of HuBERT / WavLM / wav2vec 2.0 encoders, and the global pruning budget.

MACs are multiply-accumulates of the matrix products only (norms, activations and softmax are
left out).  Per utterance of S samples, with T frames:

- CNN layer i: L_i * C_i * C_{i-1} * k_i   (L_i = output length, C_{-1} = 1)
- feature projection: T * C_last * D;  positional conv: T * D * (D / groups) * K
- attention, per layer with h heads of size d_h: projections 4 * T * D * h * d_h; scores and
  context 2 * T^2 * h * d_h (the quadratic part: attention's share grows with length);
  WavLM's gate adds T * h * (D / H0) * 8 and the gating T^2 * h
- FFN, per layer with width I: 2 * T * D * I

``count_encoder_macs`` works on stock HF configs, ``PrunedEncoderConfig`` and on models (read
from the module shapes).  ``allocate`` is the global rule shared by all pruning methods: one
error threshold across every prunable module decides how many units each keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from torch import nn

from speechdistill.data.errors import BadInputError
from speechdistill.models.frames import conv_output_lengths, receptive_field

SAMPLE_RATE = 16000


class PruneError(BadInputError):
    """A pruning request that cannot be met (bad keep ratio, unreachable budget, unsupported model)."""


@dataclass
class EncoderShape:
    """The shapes that determine an encoder's MACs."""

    family: str
    conv_dims: list[int]
    conv_kernels: list[int]
    conv_strides: list[int]
    hidden_size: int
    pos_conv_kernel: int
    pos_conv_groups: int
    head_dim: int
    orig_num_heads: int
    num_heads: list[int]
    intermediate_sizes: list[int]

    @property
    def num_layers(self) -> int:
        return len(self.num_heads)


@dataclass
class MacCount:
    """MACs of one forward pass (summed over utterances when counted for several)."""

    cnn: list[float] = field(default_factory=list)  # per conv layer
    feature_projection: float = 0.0
    pos_conv: float = 0.0
    attention: list[float] = field(default_factory=list)  # per layer, everything below summed
    attention_proj: float = 0.0
    attention_scores: float = 0.0  # the T^2 score and context products
    attention_extra: float = 0.0  # WavLM gate
    ffn: list[float] = field(default_factory=list)  # per layer
    num_frames: int = 0
    num_samples: int = 0

    @property
    def cnn_total(self) -> float:
        return float(sum(self.cnn))

    @property
    def attention_total(self) -> float:
        return float(sum(self.attention))

    @property
    def ffn_total(self) -> float:
        return float(sum(self.ffn))

    @property
    def transformer_total(self) -> float:
        return self.attention_total + self.ffn_total

    @property
    def total(self) -> float:
        return self.cnn_total + self.feature_projection + self.pos_conv + self.transformer_total

    def __add__(self, other: MacCount) -> MacCount:
        if not self.attention and not self.cnn:
            return replace(other)
        return MacCount(
            cnn=[a + b for a, b in zip(self.cnn, other.cnn)],
            feature_projection=self.feature_projection + other.feature_projection,
            pos_conv=self.pos_conv + other.pos_conv,
            attention=[a + b for a, b in zip(self.attention, other.attention)],
            attention_proj=self.attention_proj + other.attention_proj,
            attention_scores=self.attention_scores + other.attention_scores,
            attention_extra=self.attention_extra + other.attention_extra,
            ffn=[a + b for a, b in zip(self.ffn, other.ffn)],
            num_frames=self.num_frames + other.num_frames,
            num_samples=self.num_samples + other.num_samples,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            cnn_total=self.cnn_total, attention_total=self.attention_total, ffn_total=self.ffn_total,
            transformer_total=self.transformer_total, total=self.total,
        )
        return d


# ---------------------------------------------------------------------------------------------
# Shapes from configs and models


def _hf_base(obj: nn.Module) -> nn.Module:
    from speechdistill.models.encoder import hf_model_of

    try:
        return hf_model_of(obj)
    except TypeError:
        raise PruneError(
            f"{type(obj).__name__} is not a HuBERT/WavLM/wav2vec 2.0 encoder: MAC counting and pruning "
            "support HF encoders and pruned encoders only (GenDistiller students are not supported yet)"
        ) from None


def shape_of_config(config) -> EncoderShape:
    from speechdistill.models.hf import FAMILIES

    mt = getattr(config, "model_type", "")
    if mt == "pruned_encoder":
        base = config.build_base_config()
        shape = shape_of_config(base)
        shape.num_heads = list(config.num_heads)
        shape.intermediate_sizes = list(config.intermediate_sizes)
        return shape
    if mt not in FAMILIES:
        raise PruneError(
            f"MAC counting supports HuBERT/WavLM/wav2vec 2.0 and pruned encoders, not model_type {mt!r}"
        )
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    return EncoderShape(
        family=mt,
        conv_dims=list(config.conv_dim),
        conv_kernels=list(config.conv_kernel),
        conv_strides=list(config.conv_stride),
        hidden_size=int(config.hidden_size),
        pos_conv_kernel=int(config.num_conv_pos_embeddings),
        pos_conv_groups=int(config.num_conv_pos_embedding_groups),
        head_dim=int(config.hidden_size) // heads,
        orig_num_heads=heads,
        num_heads=[heads] * layers,
        intermediate_sizes=[int(config.intermediate_size)] * layers,
    )


def shape_of_model(model: nn.Module) -> EncoderShape:
    """Shapes read from the modules themselves (what actually runs)."""
    base = _hf_base(model)
    cfg = base.config
    shape = shape_of_config(cfg)
    shape.conv_dims = [int(layer.conv.out_channels) for layer in base.feature_extractor.conv_layers]
    heads, widths = [], []
    for layer in base.encoder.layers:
        attn = layer.attention
        head_dim = int(attn.head_dim)
        heads.append(int(attn.q_proj.out_features) // head_dim)
        widths.append(int(layer.feed_forward.intermediate_dense.out_features))
    shape.num_heads, shape.intermediate_sizes = heads, widths
    return shape


def encoder_shape(config_or_model) -> EncoderShape:
    if isinstance(config_or_model, EncoderShape):
        return config_or_model
    if isinstance(config_or_model, nn.Module):
        return shape_of_model(config_or_model)
    return shape_of_config(config_or_model)


# ---------------------------------------------------------------------------------------------
# Counting


def shape_macs(shape: EncoderShape, num_samples: int) -> MacCount:
    """MACs of one utterance of ``num_samples`` samples."""
    lengths = []
    n = int(num_samples)
    for k, s in zip(shape.conv_kernels, shape.conv_strides):
        n = max((n - k) // s + 1, 0)
        lengths.append(n)
    cnn, c_in = [], 1
    for length, c, k in zip(lengths, shape.conv_dims, shape.conv_kernels):
        cnn.append(float(length) * c * c_in * k)
        c_in = c
    t = lengths[-1] if lengths else 0
    d, hd = shape.hidden_size, shape.head_dim
    mc = MacCount(
        cnn=cnn,
        feature_projection=float(t) * shape.conv_dims[-1] * d,
        pos_conv=float(t) * d * (d // shape.pos_conv_groups) * shape.pos_conv_kernel,
        num_frames=t,
        num_samples=int(num_samples),
    )
    wavlm = shape.family == "wavlm"
    for h, width in zip(shape.num_heads, shape.intermediate_sizes):
        proj = 4.0 * t * d * h * hd
        scores = 2.0 * t * t * h * hd
        extra = (float(t) * h * (d // shape.orig_num_heads) * 8 + float(t) * t * h) if wavlm else 0.0
        mc.attention.append(proj + scores + extra)
        mc.attention_proj += proj
        mc.attention_scores += scores
        mc.attention_extra += extra
        mc.ffn.append(2.0 * t * d * width)
    return mc


def shape_macs_for_lengths(shape: EncoderShape, sample_lengths: Sequence[int]) -> MacCount:
    total = MacCount()
    for n in sample_lengths:
        total = total + shape_macs(shape, int(n))
    return total


def samples_for_frames(shape: EncoderShape, num_frames: int) -> int:
    hop = int(np.prod(shape.conv_strides))
    return receptive_field(shape.conv_kernels, shape.conv_strides) + (int(num_frames) - 1) * hop


def count_encoder_macs(
    config_or_model,
    num_frames: int | None = None,
    seconds: float | None = None,
    num_samples: int | None = None,
) -> MacCount:
    """Analytic MACs of one utterance given as frames, seconds (16 kHz) or samples (exactly one).

    ``config_or_model``: a stock HF HuBERT/WavLM/wav2vec2 config, a ``PrunedEncoderConfig``, an
    encoder module (``HFEncoder``, ``PrunedEncoderModel``, an HF model) or an ``EncoderShape``.
    """
    given = [x is not None for x in (num_frames, seconds, num_samples)]
    if sum(given) != 1:
        raise ValueError("give exactly one of num_frames, seconds, num_samples")
    shape = encoder_shape(config_or_model)
    if num_frames is not None:
        num_samples = samples_for_frames(shape, num_frames)
        assert conv_output_lengths(num_samples, shape.conv_kernels, shape.conv_strides) == num_frames
    elif seconds is not None:
        num_samples = round(seconds * SAMPLE_RATE)
    return shape_macs(shape, int(num_samples))


# ---------------------------------------------------------------------------------------------
# Global allocation


@dataclass
class UnitCurve:
    """One prunable module: ``rel_err[k]`` = error when keeping k units (k = 0..n), non-increasing,
    ``rel_err[n] = 0``.  ``kind``: "heads" | "ffn" | "conv"; ``index``: layer (or conv layer)."""

    kind: str
    index: int
    rel_err: np.ndarray
    min_keep: int

    @property
    def size(self) -> int:
        return len(self.rel_err) - 1

    def keep_for(self, threshold: float) -> int:
        ok = self.rel_err <= threshold
        k = int(np.argmax(ok)) if ok.any() else self.size
        return max(min(self.min_keep, self.size), k)


def check_keep_macs(keep_macs: float) -> float:
    if not (isinstance(keep_macs, (int, float)) and 0.0 < float(keep_macs) <= 1.0):
        raise PruneError(
            f"keep_macs must be a fraction in (0, 1] of the encoder's MACs to keep (e.g. 0.5), got {keep_macs!r}"
        )
    return float(keep_macs)


def apply_counts(shape: EncoderShape, curves: Sequence[UnitCurve], counts: Sequence[int]) -> EncoderShape:
    new = replace(
        shape, num_heads=list(shape.num_heads), intermediate_sizes=list(shape.intermediate_sizes),
        conv_dims=list(shape.conv_dims),
    )
    for c, k in zip(curves, counts):
        if c.kind == "heads":
            new.num_heads[c.index] = k
        elif c.kind == "ffn":
            new.intermediate_sizes[c.index] = k
        elif c.kind == "conv":
            new.conv_dims[c.index] = k
        else:
            raise ValueError(f"unknown unit kind {c.kind!r}")
    return new


@dataclass
class Allocation:
    threshold: float
    counts: list[int]
    macs_before: float
    macs_after: float
    target_macs: float

    @property
    def ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0


def allocate(
    curves: Sequence[UnitCurve],
    macs_of_counts: Callable[[Sequence[int]], float],
    keep_macs: float,
    macs_before: float,
) -> Allocation:
    """The smallest global threshold whose per-module counts fit ``keep_macs * macs_before``.

    MACs are non-increasing in the threshold, so a binary search over the sorted distinct error
    values finds the largest model under the budget exactly (no tolerance on the threshold).
    """
    keep_macs = check_keep_macs(keep_macs)
    target = keep_macs * macs_before
    # -1 keeps every unit, so a budget that fits the whole model (keep_macs=1) changes nothing;
    # from 0 up, units whose removal costs exactly nothing go first.
    candidates = np.unique(np.concatenate([np.clip(c.rel_err, 0.0, None) for c in curves] + [np.array([-1.0, 0.0])]))

    def counts_at(t: float) -> list[int]:
        return [c.keep_for(t) for c in curves]

    top = counts_at(float(candidates[-1]))
    min_macs = macs_of_counts(top)
    if min_macs > target * (1 + 1e-9):
        raise PruneError(
            f"keep_macs={keep_macs:g} is below what this model can reach: the smallest model allowed "
            f"(at least one head and a few neurons per layer{', CNN unpruned' if not any(c.kind == 'conv' for c in curves) else ''}) "
            f"keeps {min_macs / macs_before:.3f} of the MACs. Use a larger --keep-macs"
            f"{' or --prune-cnn' if not any(c.kind == 'conv' for c in curves) else ''}."
        )
    lo, hi = 0, len(candidates) - 1  # invariant: candidates[hi] fits
    while lo < hi:
        mid = (lo + hi) // 2
        if macs_of_counts(counts_at(float(candidates[mid]))) <= target * (1 + 1e-9):
            hi = mid
        else:
            lo = mid + 1
    t = float(candidates[hi])
    counts = counts_at(t)
    return Allocation(t, counts, macs_before, macs_of_counts(counts), target)
