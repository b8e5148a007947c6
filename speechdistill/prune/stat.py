"""STAT: retraining-free structured pruning of HuBERT / WavLM / wav2vec 2.0 encoders.

Flynn et al., arXiv 2406.00061 (STAT, for BERT), adapted to speech encoders.  ``prune_model`` runs:

1. ``_calibrate`` (``calib.collect_statistics``): one pass of the unpruned model, sketching each
   FFN's post-activation outputs Z, each attention's per-head context C and (``prune_cnn``) each
   CNN layer's channels, padding frames excluded;
2. ``_error_curves``: per module, an error curve err(k) for every possible kept count k:
   - FFN: column-pivoted QR of Z with column j scaled by ||W2[:, j]||; err(k) = ||R22||_F;
   - heads: greedy block-pivoted QR of C, head h's block scaled by the triangular factor of its
     out_proj columns (so the block norm is the norm of the head's contribution to the output);
     err(k) = residual norm (decompose.block_pivoted_qr);
   - CNN channel c of conv i: as the FFN, scaled by ||W_{i+1}[:, c, :]||;
3. ``budget.allocate``: one global threshold on err(k) / reference across all modules, binary-searched so the pruned
   encoder keeps ``keep_macs`` of the MACs over the calibration lengths (budget.allocate; the
   attention's T^2 terms use the real calibration lengths).  Reference ("error_norm"):
   ``residual`` (default, our design) = norm of the residual stream the module's output is added
   to, so modules that barely move the stream give up more units; ``module`` = the module's own
   output norm.  CNN layers have no residual stream and always use their own norm, so with ``prune_cnn``
   the two scales do not compare: by default (``cnn_budget="search"``) the budget is split per group
   instead, by measuring candidate splits (``_search_cnn_split``).
4. ``_apply_ffn`` / ``_apply_heads`` / ``_apply_cnn``, then ``_build_pruned``: FFN W1, b1 = kept rows, W2 <- W2 T^T (interpolation matrix in original order, so
   Z ≈ Z[:, kept] T), b2 unchanged; heads: q/k/v rows of kept heads, W_O <- W_O[:, kept] +
   W_O[:, elim] X^T with X the least-squares fit C_elim ≈ C_kept X; CNN: kept output channels
   (and their group-norm affine: HF's group norm has one group per channel, so slicing it is
   exact), the next conv's input channels corrected by T.  ``stat-nocorrect`` keeps the same
   selection without the corrections; ``magnitude`` selects by weight norms (magnitude.py).

CNN pruning needs a group-norm CNN (HuBERT/WavLM Base): a layer-norm CNN normalises over
channels, so dropping channels would change every kept channel; the last conv layer feeds a
LayerNorm over its channels in the feature projection and is never pruned.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.linalg
import torch
from torch import nn

from speechdistill import SAMPLE_RATE
from speechdistill.models.pruned import (
    PrunedEncoderModel,
    base_config_dict,
    pruned_config_from,
)
from speechdistill.prune import magnitude as mag
from speechdistill.prune.budget import (
    Allocation,
    EncoderShape,
    MacCount,
    PruneError,
    UnitCurve,
    allocate,
    apply_counts,
    check_keep_macs,
    shape_macs,
    shape_of_model,
)
from speechdistill.prune.calib import CalibStats, collect_statistics, peak_rss_mb
from speechdistill.prune.decompose import (
    PivotedQR,
    blas_threads,
    block_pivoted_qr,
    interpolation_matrix,
    lstsq_coefficients,
    pivoted_qr,
    reduce_rows,
)

log = logging.getLogger(__name__)

METHODS = ("stat", "stat-nocorrect", "magnitude")
ERROR_NORMS = ("residual", "module")
CNN_BUDGETS = ("search", "global")
# Fractions of the CNN's MACs that the budget search tries keeping (1.0 = transformer-only STAT).
CNN_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1)


@dataclass
class PruneOptions:
    prune_cnn: bool = False
    sketch_rows: int = 4096  # CountSketch rows per module (0 = keep every frame exactly)
    seed: int = 0
    min_heads: int = 1
    min_neurons: int = 8
    min_channels: int = 8
    error_norm: str = "residual"
    blas_threads: int | None = 1  # OpenBLAS threads for the QRs (see decompose.blas_threads)
    # With prune_cnn: how the MAC budget is split between the CNN and the transformer.  "search" (default):
    # try keeping each of ``cnn_fractions`` of the CNN's MACs, give the rest of the budget to the
    # transformer by STAT's global threshold, and keep the candidate whose last hidden state is closest to
    # the unpruned model's on ``search_utterances`` calibration utterances.  "global": one threshold over
    # CNN and transformer errors (their normalisations differ, so it over-prunes the CNN; kept for comparison).
    cnn_budget: str = "search"
    cnn_fractions: tuple[float, ...] = CNN_FRACTIONS
    search_utterances: int = 16


@dataclass
class _Source:
    hf: nn.Module  # the HF base model (possibly already pruned)
    family: str
    normalize: bool
    base_config: dict
    kept_heads: list[list[int]]  # original head ids of the current heads, per layer
    source_model: str


@dataclass
class _Module:
    curve: UnitCurve
    ref: float = 1.0
    order: np.ndarray | None = None  # magnitude / block pivot order
    qr: PivotedQR | None = None
    scale: np.ndarray | None = None
    r0: np.ndarray | None = None  # reduced (unscaled) context sketch for the head least squares
    extra: dict = field(default_factory=dict)


def resolve_source(encoder: nn.Module, source_model: str | None = None) -> _Source:
    """The HF model inside any supported encoder, plus what the pruned config must carry."""
    from speechdistill.models.encoder import hf_model_of
    from speechdistill.models.hf import family_of
    from speechdistill.models.teacher import unwrap_teacher

    encoder = unwrap_teacher(encoder)
    from speechdistill.models.edge_frontend import ReducedRateEncoder

    if isinstance(encoder, ReducedRateEncoder):
        raise PruneError(
            "pruning a reduced-frame-rate student (reduced_rate_encoder) is not supported: the pruned model would "
            "lose the upsampling to the teacher's frame rate"
        )
    if isinstance(encoder, PrunedEncoderModel):
        cfg = encoder.config
        return _Source(
            encoder.model, cfg.base_model_type, encoder.normalize, dict(cfg.base_config),
            [list(k) for k in cfg.kept_heads], source_model or cfg.source_model or "",
        )
    try:
        hf = hf_model_of(encoder)
    except TypeError:
        raise PruneError(
            f"pruning {type(encoder).__name__} is not supported yet: prune an HF HuBERT/WavLM/wav2vec 2.0 "
            "encoder or a pruned encoder (GenDistiller students have a different layer structure)"
        ) from None
    normalize = getattr(encoder, "normalize", getattr(hf.config, "feat_extract_norm", "group") == "layer")
    family = family_of(hf.config)
    heads = int(hf.config.num_attention_heads)
    kept = [list(range(heads)) for _ in hf.encoder.layers]
    for i, layer in enumerate(hf.encoder.layers):
        n = int(layer.attention.q_proj.out_features) // int(layer.attention.head_dim)
        if n != heads:
            raise PruneError(f"layer {i} of {type(encoder).__name__} has {n} heads, its config says {heads}")
    return _Source(hf, family, normalize, base_config_dict(hf.config), kept, source_model or "")


# ---------------------------------------------------------------------------------------------
# Error curves


def _curve(kind: str, index: int, abs_err: np.ndarray, ref: float, min_keep: int) -> UnitCurve:
    ref = ref if ref > 0 else 1.0
    rel = np.asarray(abs_err, dtype=np.float64) / ref
    rel = np.minimum.accumulate(rel)  # guard against round-off making the curve tick up
    rel[-1] = 0.0
    return UnitCurve(kind, index, rel, min_keep)


def _stat_ffn(i: int, ff: nn.Module, z: np.ndarray, ref_sq: float, opts: PruneOptions) -> _Module:
    w = ff.output_dense.weight.detach().double().norm(dim=0).numpy()
    qr = pivoted_qr((z * w.astype(np.float32)[None, :]).astype(np.float32, copy=False))
    err = qr.errors()
    ref = float(np.sqrt(ref_sq)) if opts.error_norm == "residual" else err[0]
    return _Module(_curve("ffn", i, err, ref, opts.min_neurons), ref, qr=qr, scale=w)


def _head_factors(wo: torch.Tensor, head_dim: int) -> list[np.ndarray]:
    """R_h with ||C_h W_O,h^T||_F = ||C_h R_h^T||_F (QR of each head's out_proj columns)."""
    w = wo.detach().double().numpy()
    out = []
    for h in range(w.shape[1] // head_dim):
        blk = w[:, h * head_dim : (h + 1) * head_dim]
        out.append(scipy.linalg.qr(blk, mode="r", check_finite=False)[0][:head_dim])
    return out


def _stat_heads(i: int, attn: nn.Module, c: np.ndarray, ref_sq: float, opts: PruneOptions) -> _Module:
    hd = int(attn.head_dim)
    r0 = reduce_rows(c.astype(np.float64))
    factors = _head_factors(attn.out_proj.weight, hd)
    scaled = np.concatenate(
        [r0[:, h * hd : (h + 1) * hd] @ f.T for h, f in enumerate(factors)], axis=1
    )
    bqr = block_pivoted_qr(scaled, hd)
    ref = float(np.sqrt(ref_sq)) if opts.error_norm == "residual" else bqr.err[0]
    return _Module(_curve("heads", i, bqr.err, ref, opts.min_heads), ref, order=bqr.order, r0=r0)


def _stat_conv(i: int, conv_next: nn.Conv1d, y: np.ndarray, opts: PruneOptions) -> _Module:
    wn = conv_next.weight.detach().double()
    w = wn.transpose(0, 1).reshape(wn.shape[1], -1).norm(dim=1).numpy()
    qr = pivoted_qr((y * w.astype(np.float32)[None, :]).astype(np.float32, copy=False))
    err = qr.errors()
    return _Module(_curve("conv", i, err, err[0], opts.min_channels), err[0], qr=qr, scale=w)


def _mag_module(kind: str, i: int, scores: np.ndarray, min_keep: int) -> _Module:
    order, rel = mag.magnitude_curve(scores)
    return _Module(_curve(kind, i, rel, 1.0, min_keep), 1.0, order=order)


# ---------------------------------------------------------------------------------------------
# Selections


def _id_selection(mod: _Module, k: int, correct: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Kept columns (ascending) and, for corrections, the unscaled T (k x n) with Z ≈ Z[:, kept] T."""
    if mod.qr is None:  # magnitude
        return np.sort(mod.order[:k]), None
    kept, t_hat = interpolation_matrix(mod.qr, k)
    if not correct:
        return kept, None
    w = mod.scale
    inv = np.divide(1.0, w, out=np.zeros_like(w), where=w > 0)
    t = w[kept][:, None] * t_hat * inv[None, :]
    t[np.arange(len(kept)), kept] = 1.0
    return kept, t


def _head_cols(heads: Sequence[int], hd: int) -> np.ndarray:
    return np.concatenate([np.arange(h * hd, (h + 1) * hd) for h in heads]) if len(heads) else np.zeros(0, int)


def _head_selection(mod: _Module, k: int, n: int, hd: int, correct: bool) -> tuple[np.ndarray, np.ndarray | None]:
    kept = np.sort(mod.order[:k])
    if not correct or mod.r0 is None or k == n:
        return kept, None
    elim = np.setdiff1d(np.arange(n), kept)
    x = lstsq_coefficients(mod.r0[:, _head_cols(kept, hd)], mod.r0[:, _head_cols(elim, hd)])
    return kept, x


# ---------------------------------------------------------------------------------------------
# Entry point


def _macs_for_lengths(shape: EncoderShape, counts: Counter) -> MacCount:
    total = MacCount()
    for n, times in counts.items():
        mc = shape_macs(shape, n)
        for _ in range(times):  # exact and cheap: few distinct lengths in practice
            total = total + mc
    return total


def _macs_total(shape: EncoderShape, counts: Counter) -> float:
    return float(sum(shape_macs(shape, n).total * times for n, times in counts.items()))


@dataclass
class _Edits:
    """The pruned state dict and the shapes it describes, filled in by the ``_apply_*`` steps."""

    sd: dict[str, torch.Tensor]
    kept_heads: list[list[int]]
    widths: list[int]
    conv_dims: list[int]
    per_layer: dict[int, dict]
    conv_report: list[dict] = field(default_factory=list)


def _check_request(src: _Source, method: str, opts: PruneOptions) -> None:
    if method not in METHODS:
        raise PruneError(f"unknown pruning method {method!r} (choose from {', '.join(METHODS)})")
    if opts.error_norm not in ERROR_NORMS:
        raise PruneError(f"error_norm must be one of {', '.join(ERROR_NORMS)}, got {opts.error_norm!r}")
    if opts.cnn_budget not in CNN_BUDGETS:
        raise PruneError(f"cnn_budget must be one of {', '.join(CNN_BUDGETS)}, got {opts.cnn_budget!r}")
    if opts.prune_cnn and opts.cnn_budget == "search" and not (
        opts.cnn_fractions and all(0.0 < f <= 1.0 for f in opts.cnn_fractions) and opts.search_utterances >= 1
    ):
        raise PruneError(f"cnn_fractions must be fractions in (0, 1] and search_utterances >= 1, got "
                         f"{list(opts.cnn_fractions)} and {opts.search_utterances}")
    if opts.sketch_rows < 0:
        raise PruneError(f"sketch rows must be >= 0 (0 = exact), got {opts.sketch_rows}")
    if opts.prune_cnn and getattr(src.hf.config, "feat_extract_norm", "group") != "group":
        raise PruneError(
            "--prune-cnn needs a group-norm CNN (HuBERT/WavLM Base): this model's CNN uses layer norm over "
            "channels, so removing channels would change the kept ones. Prune without --prune-cnn."
        )


def _widest_module(shape: EncoderShape, prune_cnn: bool) -> int:
    return max([*shape.intermediate_sizes, *(h * shape.head_dim for h in shape.num_heads),
                *(shape.conv_dims[:-1] if prune_cnn else [])])


def _calibrate(
    src: _Source, calib_batches, method: str, opts: PruneOptions, calib_lengths, widest: int,
    progress: bool, total_batches: int | None,
) -> tuple[CalibStats | None, list[int]]:
    """Step 1: activation statistics (none for magnitude) and the calibration lengths (samples)."""
    if method == "magnitude":
        if calib_lengths is None:
            if calib_batches is None:
                raise PruneError("give calibration batches or calib_lengths (needed for the MAC budget)")
            calib_lengths = [int(n) for _, lengths in calib_batches for n in lengths]
        return None, [int(n) for n in calib_lengths]
    if calib_batches is None:
        raise PruneError(f"method {method!r} needs calibration audio")
    stats = collect_statistics(
        src.hf, calib_batches, normalize=src.normalize, sketch_rows=opts.sketch_rows, prune_cnn=opts.prune_cnn,
        seed=opts.seed, progress=progress, total_batches=total_batches,
    )
    if stats.frames < widest:
        log.warning(
            "only %d calibration frames for modules up to %d units wide: units beyond that rank are "
            "chosen arbitrarily; use more calibration audio", stats.frames, widest,
        )
    return stats, stats.sample_lengths


def _error_curves(src: _Source, stats: CalibStats | None, method: str, opts: PruneOptions) -> list[_Module]:
    """Step 2: err(k) for every prunable module (CNN layers first, then heads and FFN per layer)."""
    hf = src.hf
    convs = hf.feature_extractor.conv_layers
    mods: list[_Module] = []
    with torch.no_grad(), blas_threads(opts.blas_threads):
        if opts.prune_cnn:
            for i in range(len(convs) - 1):
                if method == "magnitude":
                    s = mag.conv_scores(convs[i].conv.weight, convs[i + 1].conv.weight)
                    mods.append(_mag_module("conv", i, s, opts.min_channels))
                else:
                    mods.append(_stat_conv(i, convs[i + 1].conv, stats.conv[i].matrix(), opts))
                    stats.conv[i].release()
        for i, layer in enumerate(hf.encoder.layers):
            attn, ff = layer.attention, layer.feed_forward
            if method == "magnitude":
                s = mag.head_scores(
                    attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.out_proj.weight, int(attn.head_dim)
                )
                mods.append(_mag_module("heads", i, s, opts.min_heads))
                s = mag.ffn_scores(ff.intermediate_dense.weight, ff.output_dense.weight)
                mods.append(_mag_module("ffn", i, s, opts.min_neurons))
            else:
                mods.append(_stat_heads(i, attn, stats.attn[i].matrix(), stats.attn_ref_sq[i], opts))
                stats.attn[i].release()
                mods.append(_stat_ffn(i, ff, stats.ffn[i].matrix(), stats.ffn_ref_sq[i], opts))
                stats.ffn[i].release()
    return mods


def _apply_cnn(edits: _Edits, src: _Source, mods: list[_Module], counts: Sequence[int], correct: bool) -> None:
    """Step 4a: kept output channels of each pruned conv; the next conv's inputs corrected by T."""
    sd = edits.sd
    conv_sel = {m.curve.index: (m, k) for m, k in zip(mods, counts) if m.curve.kind == "conv"}
    prev_t: np.ndarray | None = None
    prev_kept: np.ndarray | None = None
    for i in range(len(src.hf.feature_extractor.conv_layers)):
        p = f"feature_extractor.conv_layers.{i}."
        w = sd[p + "conv.weight"]
        dtype = w.dtype
        if prev_kept is not None:
            if prev_t is not None:
                w = torch.einsum("ojt,kj->okt", w.double(), torch.from_numpy(prev_t)).to(dtype)
            else:
                w = w[:, torch.from_numpy(prev_kept)]
        prev_kept, prev_t = None, None
        if i in conv_sel:
            m, k = conv_sel[i]
            kept, t = _id_selection(m, k, correct)
            idx = torch.from_numpy(kept)
            w = w[idx]
            for name in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
                if p + name in sd:
                    sd[p + name] = sd[p + name][idx]
            edits.conv_report.append(
                {"conv_layer": i, "channels_before": m.curve.size, "channels_after": int(k),
                 "rel_error": float(m.curve.rel_err[k])}
            )
            edits.conv_dims[i] = int(k)
            prev_kept, prev_t = kept, t
        sd[p + "conv.weight"] = w.contiguous()


def _apply_ffn(edits: _Edits, m: _Module, k: int, correct: bool) -> None:
    """Step 4b: FFN W1, b1 = kept rows; W2 <- W2 T^T (or the kept columns without correction)."""
    sd, i = edits.sd, m.curve.index
    p = f"encoder.layers.{i}.feed_forward."
    kept, t = _id_selection(m, k, correct)
    idx = torch.from_numpy(kept)
    w2 = sd[p + "output_dense.weight"]
    sd[p + "intermediate_dense.weight"] = sd[p + "intermediate_dense.weight"][idx].contiguous()
    sd[p + "intermediate_dense.bias"] = sd[p + "intermediate_dense.bias"][idx].contiguous()
    if t is not None:
        sd[p + "output_dense.weight"] = (w2.double() @ torch.from_numpy(t).T).to(w2.dtype).contiguous()
    else:
        sd[p + "output_dense.weight"] = w2[:, idx].contiguous()
    edits.widths[i] = int(k)
    edits.per_layer[i].update(neurons_before=m.curve.size, neurons_after=int(k), ffn_rel_error=float(m.curve.rel_err[k]))


def _apply_heads(edits: _Edits, src: _Source, m: _Module, k: int, correct: bool) -> None:
    """Step 4c: q/k/v rows of kept heads; W_O <- W_O[:, kept] + W_O[:, elim] X^T; WavLM gates by head id."""
    sd, i = edits.sd, m.curve.index
    p = f"encoder.layers.{i}.attention."
    hd = int(src.hf.encoder.layers[i].attention.head_dim)
    n = m.curve.size
    kept, x = _head_selection(m, k, n, hd, correct)
    cols = torch.from_numpy(_head_cols(kept, hd))
    for name in ("q_proj", "k_proj", "v_proj"):
        sd[p + name + ".weight"] = sd[p + name + ".weight"][cols].contiguous()
        if p + name + ".bias" in sd:
            sd[p + name + ".bias"] = sd[p + name + ".bias"][cols].contiguous()
    wo = sd[p + "out_proj.weight"]
    new_wo = wo[:, cols].double()
    if x is not None:
        elim = torch.from_numpy(_head_cols(np.setdiff1d(np.arange(n), kept), hd))
        new_wo = new_wo + wo[:, elim].double() @ torch.from_numpy(x).T
    sd[p + "out_proj.weight"] = new_wo.to(wo.dtype).contiguous()
    if p + "gru_rel_pos_const" in sd:
        sd[p + "gru_rel_pos_const"] = sd[p + "gru_rel_pos_const"][:, torch.from_numpy(kept)].contiguous()
    edits.kept_heads[i] = [src.kept_heads[i][h] for h in kept]
    edits.per_layer[i].update(
        heads_before=n, heads_after=int(k), kept_heads=edits.kept_heads[i], attn_rel_error=float(m.curve.rel_err[k]),
    )


def _build_pruned(src: _Source, edits: _Edits, method: str, keep_macs: float, base_conv: list[int]) -> PrunedEncoderModel:
    """Step 5: a ``PrunedEncoderModel`` of the new shapes holding the edited weights."""
    cfg = pruned_config_from(
        src.base_config, src.family, edits.kept_heads, edits.widths,
        conv_dims=None if edits.conv_dims == base_conv else edits.conv_dims,
        normalize_input=src.normalize, prune_method=method, keep_macs=keep_macs, source_model=src.source_model,
    )
    pruned = PrunedEncoderModel(cfg)
    missing, unexpected = pruned.model.load_state_dict(edits.sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"pruned state dict does not fit the pruned model: missing {missing}, unexpected {unexpected}")
    return pruned.to(next(src.hf.parameters()).dtype).eval()


def _apply_all(
    src: _Source, mods: list[_Module], counts: Sequence[int], method: str, keep_macs: float, opts: PruneOptions,
    shape0: EncoderShape,
) -> tuple[PrunedEncoderModel, _Edits]:
    """Step 4: the pruned model for per-module kept ``counts``."""
    correct = method == "stat"
    edits = _Edits(
        dict(src.hf.state_dict()), [list(k) for k in src.kept_heads], list(shape0.intermediate_sizes),
        list(shape0.conv_dims), {i: {"layer": i} for i in range(len(src.hf.encoder.layers))},
    )
    with torch.no_grad(), blas_threads(opts.blas_threads):
        if opts.prune_cnn:
            _apply_cnn(edits, src, mods, counts, correct)
        for m, k in zip(mods, counts):
            if m.curve.kind == "ffn":
                _apply_ffn(edits, m, k, correct)
            elif m.curve.kind == "heads":
                _apply_heads(edits, src, m, k, correct)
    pruned = _build_pruned(src, edits, method, keep_macs, list(src.base_config.get("conv_dim", edits.conv_dims)))
    return pruned, edits


def _search_batches(batches: Sequence[tuple[torch.Tensor, torch.Tensor]], utterances: int):
    """The first ``utterances`` calibration utterances, one per batch (exact for group-norm CNNs)."""
    out = []
    for wav, lengths in batches:
        for i in range(wav.shape[0]):
            if len(out) >= utterances:
                return out
            n = int(lengths[i])
            out.append((wav[i : i + 1, :n], lengths[i : i + 1]))
    return out


@torch.no_grad()
def _last_state_error(model: nn.Module, normalize: bool, batches, refs: list[torch.Tensor]) -> float:
    """||h - h_ref|| / ||h_ref|| of the last hidden state over the search utterances."""
    from speechdistill.models.encoder import hf_encode

    num = den = 0.0
    for (wav, lengths), ref in zip(batches, refs):
        h = hf_encode(model, wav, lengths, normalize=normalize).hidden_states[-1]
        num += float((h - ref).double().pow(2).sum())
        den += float(ref.double().pow(2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def _search_cnn_split(
    src: _Source, mods: list[_Module], curves: list[UnitCurve], macs_fn, keep_macs: float, macs_before: float,
    conv_full: float, method: str, opts: PruneOptions, shape0: EncoderShape, batches,
) -> tuple:
    """Budget per group: for each fraction f of the CNN's MACs, the CNN keeps f (STAT threshold over the conv
    layers only) and the transformer gets the rest of the budget (STAT threshold over heads and FFNs); the
    candidate whose last hidden state is closest to the unpruned model's wins.

    Why not one threshold: CNN errors are relative to the conv outputs and transformer errors to the residual
    stream, and a CNN error reaches every layer above it, so the two scales do not compare (one threshold
    gave the CNN more than its share: at half the MACs the WER doubled against transformer-only STAT).  The
    candidate f = 1 is transformer-only STAT, so wherever that is reachable the search can only match or
    improve on it (on the calibration utterances).
    """
    from speechdistill.models.encoder import hf_encode

    conv_idx = [i for i, c in enumerate(curves) if c.kind == "conv"]
    rest_idx = [i for i, c in enumerate(curves) if c.kind != "conv"]
    full = [c.size for c in curves]

    def merged(conv_counts, rest_counts):
        counts = list(full)
        for i, k in zip(conv_idx, conv_counts):
            counts[i] = k
        for i, k in zip(rest_idx, rest_counts):
            counts[i] = k
        return counts

    with torch.no_grad():
        refs = [hf_encode(src.hf, w, n, normalize=src.normalize).hidden_states[-1] for w, n in batches]
    tried: list[dict] = []
    best = None
    seen: set[tuple[int, ...]] = set()
    for f in sorted(set(opts.cnn_fractions), reverse=True):
        try:
            if f >= 1.0:
                conv_counts = [full[i] for i in conv_idx]
            else:
                # Keep fraction f of the CNN's MACs with the transformer whole: the conv-only allocation's target.
                target = (macs_before - (1.0 - f) * conv_full) / macs_before
                conv_alloc = allocate([curves[i] for i in conv_idx],
                                      lambda cc: macs_fn(merged(cc, [full[i] for i in rest_idx])), target, macs_before)
                conv_counts = conv_alloc.counts
            rest_alloc = allocate([curves[i] for i in rest_idx],
                                  lambda rc, cc=tuple(conv_counts): macs_fn(merged(cc, rc)), keep_macs, macs_before)
        except PruneError:
            tried.append({"cnn_fraction": f, "reachable": False})
            continue
        counts = merged(conv_counts, rest_alloc.counts)
        if tuple(counts) in seen:
            continue
        seen.add(tuple(counts))
        pruned, edits = _apply_all(src, mods, counts, method, keep_macs, opts, shape0)
        err = _last_state_error(pruned.model, src.normalize, batches, refs)
        row = {"cnn_fraction": f, "reachable": True, "conv_dims": list(edits.conv_dims),
               "keep_macs_achieved": macs_fn(counts) / macs_before, "last_state_rel_error": err}
        tried.append(row)
        log.info("CNN budget search: CNN keeps %.2f of its MACs -> conv %s, last-state error %.4f",
                 f, edits.conv_dims, err)
        if best is None or err < best[0]:
            alloc = Allocation(rest_alloc.threshold, counts, macs_before, macs_fn(counts), keep_macs * macs_before)
            best = (err, alloc, pruned, edits, f)
    if best is None:
        # Nothing reachable: allocate() explains why (with every CNN layer prunable).
        allocate(curves, macs_fn, keep_macs, macs_before)
        raise PruneError(f"keep_macs={keep_macs:g} is not reachable by any CNN/transformer split")
    err, alloc, pruned, edits, f = best
    return alloc, pruned, edits, {"chosen_cnn_fraction": f, "chosen_last_state_rel_error": err,
                                  "search_utterances": len(batches), "candidates": tried}


def prune_model(
    encoder: nn.Module,
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    method: str = "stat",
    keep_macs: float = 0.5,
    *,
    options: PruneOptions | None = None,
    calib_lengths: Sequence[int] | None = None,
    source_model: str | None = None,
    progress: bool = False,
    total_batches: int | None = None,
) -> tuple[PrunedEncoderModel, dict]:
    """Prune ``encoder`` (HFEncoder, PrunedEncoderModel, Teacher or an HF model) to ``keep_macs``
    of its MACs over the calibration lengths.  Returns the pruned encoder and a report dict.

    ``calib_batches``: (wav [B, S] float 16 kHz, lengths [B]) batches.  The magnitude method only
    needs the lengths: pass ``calib_batches=None`` and ``calib_lengths`` (samples) instead.
    """
    t_start = time.perf_counter()
    opts = options or PruneOptions()
    keep_macs = check_keep_macs(keep_macs)
    src = resolve_source(encoder, source_model)
    _check_request(src, method, opts)
    shape0 = shape_of_model(src.hf)
    widest = _widest_module(shape0, opts.prune_cnn)
    if method != "magnitude" and 0 < opts.sketch_rows < widest:
        raise PruneError(
            f"--sketch-rows {opts.sketch_rows} is smaller than the widest prunable module ({widest} units): the "
            f"sketch could not tell those units apart. Use --sketch-rows >= {widest} (or 0 for no sketch)."
        )
    timings = {}
    eval_batches = None
    if opts.prune_cnn and opts.cnn_budget == "search" and calib_batches is not None:
        # The split search re-reads a few calibration utterances: keep the batches.
        calib_batches = list(calib_batches)
        eval_batches = _search_batches(calib_batches, opts.search_utterances)

    t0 = time.perf_counter()
    stats, lengths = _calibrate(src, calib_batches, method, opts, calib_lengths, widest, progress, total_batches)
    if not lengths:
        raise PruneError("no calibration utterances")
    timings["calibration_time_s"] = time.perf_counter() - t0
    length_counts = Counter(lengths)

    t0 = time.perf_counter()
    mods = _error_curves(src, stats, method, opts)
    timings["decompose_time_s"] = time.perf_counter() - t0

    # Step 3: one global threshold over all modules, searched to meet the MAC budget (with --prune-cnn:
    # per group, the CNN/transformer split chosen by measuring candidates, see PruneOptions.cnn_budget).
    curves = [m.curve for m in mods]

    def macs_fn(counts: Sequence[int]) -> float:
        return _macs_total(apply_counts(shape0, curves, counts), length_counts)

    macs_before = _macs_total(shape0, length_counts)
    t0 = time.perf_counter()
    search = None
    if opts.prune_cnn and opts.cnn_budget == "search" and eval_batches:
        alloc, pruned, edits, search = _search_cnn_split(
            src, mods, curves, macs_fn, keep_macs, macs_before, _macs_for_lengths(shape0, length_counts).cnn_total,
            method, opts, shape0, eval_batches,
        )
    else:
        alloc = allocate(curves, macs_fn, keep_macs, macs_before)
        pruned, edits = _apply_all(src, mods, alloc.counts, method, keep_macs, opts, shape0)
    timings["apply_time_s"] = time.perf_counter() - t0

    before = _macs_for_lengths(shape0, length_counts)
    after = _macs_for_lengths(shape_of_model(pruned.model), length_counts)
    if abs(after.total - alloc.macs_after) > 1e-6 * max(after.total, 1.0):
        raise RuntimeError("MAC count of the built model disagrees with the allocation (bug)")
    report = _report(src, pruned, method, keep_macs, opts, alloc, stats, lengths, before, after, edits)
    report.update(wall_time_s=time.perf_counter() - t_start, **timings, peak_rss_mb=peak_rss_mb())
    if search is not None:
        report["cnn_budget_search"] = search
    log.info(
        "%s: kept %.3f of MACs (target %.3f), heads %s, FFN %s%s", method, report["keep_macs_achieved"], keep_macs,
        [len(k) for k in edits.kept_heads], edits.widths, f", CNN {edits.conv_dims}" if opts.prune_cnn else "",
    )
    return pruned, report


def _report(src, pruned, method, keep_macs, opts, alloc, stats, lengths, before, after, edits) -> dict:
    n_utts = len(lengths)
    return {
        "method": method,
        "keep_macs_target": keep_macs,
        "keep_macs_achieved": after.total / before.total,
        "threshold": alloc.threshold,
        "error_norm": opts.error_norm,
        "source_model": src.source_model,
        "family": src.family,
        "options": asdict(opts),
        "calibration": {
            "utterances": n_utts,
            "seconds": sum(lengths) / SAMPLE_RATE,
            "frames": stats.frames if stats is not None else None,
            "sketched": bool(stats is not None and opts.sketch_rows and stats.frames > opts.sketch_rows),
        },
        "macs_before": before.total,
        "macs_after": after.total,
        "macs_per_utterance_before": before.total / n_utts,
        "macs_per_utterance_after": after.total / n_utts,
        "macs_breakdown_before": before.to_dict(),
        "macs_breakdown_after": after.to_dict(),
        "params_before": int(sum(p.numel() for p in src.hf.parameters())),
        "params_after": int(sum(p.numel() for p in pruned.parameters())),
        "layers": [edits.per_layer[i] for i in range(len(edits.per_layer))],
        "conv_layers": edits.conv_report,
        "conv_dims": edits.conv_dims,
    }
