"""Initialise a student's cheaper front end (``models.edge_frontend``) from the teacher's, on calibration audio.

Thin CNN (``conv_init="id"``): the STAT recipe (``prune.stat``) applied to every CNN layer in turn.  For
layer i, the post-activation outputs Y (frames x channels) are sketched (``decompose.FrameSketch``), their
columns scaled by the norm of the weights that read them (``stat._stat_conv``), and a column-pivoted QR
keeps k channels with Y ≈ Y[:, kept] T (``stat._id_selection``); layer i keeps those output channels and
layer i+1's input weights become W_{i+1} T^T, so it still sees (approximately) the teacher's input.
Unlike STAT's single calibration pass, layer i's statistics come from the student whose layers below i
are already thinned and corrected: at 4x thinning of all seven layers the one-pass errors compound, while
here each layer's selection and correction see the inputs the student will really give it.

Last CNN layer and projection: the last layer feeds a LayerNorm over its channels and the projection, so
no T-correction is exact there; its channels are chosen the same way (scaled by the projection's column
norms) and the projection (weight and bias) is refitted by least squares to the teacher's projected
features, given the thinned CNN's normalised features.

Positional conv (``pos_conv_init="fit"``): per group, least squares of the new conv's taps on the student's
projected features against the teacher's positional conv output (before its GELU), so the cheaper conv
(fewer taps, more groups, depthwise) reproduces the teacher's positional embedding as closely as its shape
allows.  ``restrict`` takes the teacher's weights restricted to the new groups and central taps.

Frame-rate reduction: the last conv layer (kernel = stride = 2) becomes kernel = stride = 2f initialised
as the teacher's taps repeated and divided by f, i.e. the average of f consecutive teacher outputs
(before the activation); the fits then target the teacher's features averaged over f frames.

All statistics are exact per utterance (no padding reaches a group norm).  Without calibration audio,
``id`` and ``fit`` are refused (``random`` and ``restrict`` need none).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from speechdistill.models.edge_frontend import FrontEndConfig, pos_conv_weight, set_pos_conv_weight
from speechdistill.models.encoder import hf_encode, hf_model_of, normalize_waveforms
from speechdistill.prune.budget import PruneError
from speechdistill.prune.decompose import FrameSketch, blas_threads
from speechdistill.prune.stat import PruneOptions, _id_selection, _Module, _stat_conv

log = logging.getLogger(__name__)

# Frames used by the least-squares fits (more only costs time: the fits have at most a few thousand unknowns).
MAX_FIT_FRAMES = 20000
MAX_POS_FIT_FRAMES = 6000  # the positional-conv fit has at most a few hundred unknowns per group
# Gram-matrix entries (groups x unknowns^2) above which the positional-conv fit falls back to ``restrict``.
MAX_FIT_GRAM = 3e7
RIDGE = 1e-4  # relative to the mean diagonal of each Gram matrix


@dataclass
class FrontEndInitReport:
    conv_channels: list[int] = field(default_factory=list)
    conv_rel_errors: list[float] = field(default_factory=list)  # ||R22|| / ||Y|| of each layer's selection
    projection_rel_residual: float | None = None  # ||fit - target|| / ||target|| of the projection refit
    pos_conv_init: str = ""
    pos_conv_rel_residual: float | None = None
    x0_cosine: float | None = None  # mean cosine of the student's hidden_states[0] to the teacher's
    calibration_utterances: int = 0

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def pool_frames(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[T, D] -> [T // factor, D]: the mean of each run of ``factor`` frames (the tail is dropped)."""
    if factor == 1:
        return x
    n = x.shape[0] // factor
    return x[: n * factor].reshape(n, factor, *x.shape[1:]).mean(1)


def _ridge_solve(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """argmin ||X b - y||^2 + lambda ||b||^2 from X^T X and X^T y (batched over a leading axis or not)."""
    n = gram.shape[-1]
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1).clamp(min=1e-12)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    reg = gram + (RIDGE * scale)[..., None, None] * eye
    return torch.linalg.solve(reg, cross)


class _Calib:
    """Calibration utterances (1-D float32 tensors, normalised if the model wants it) and teacher features."""

    def __init__(self, teacher: nn.Module, wavs: Sequence[np.ndarray], normalize: bool, factor: int):
        self.teacher = teacher
        self.factor = factor
        self.wavs = []
        for w in wavs:
            x = torch.as_tensor(np.asarray(w, dtype=np.float32))
            if normalize:
                x = normalize_waveforms(x[None], torch.tensor([x.numel()]))[0]
            self.wavs.append(x)
        if not self.wavs:
            raise PruneError("front-end initialisation needs calibration audio (none was given)")

    @torch.no_grad()
    def teacher_features(self, max_frames: int = MAX_FIT_FRAMES) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per utterance (until ``max_frames``): the teacher's projected features and positional-conv output
        before its activation, both [T, D], pooled to the student's frame rate."""
        t = self.teacher
        out, frames = [], 0
        for w in self.wavs:
            feats = t.feature_extractor(w[None]).transpose(1, 2)  # [1, T, C]
            proj = t.feature_projection(feats)
            proj = proj[0] if isinstance(proj, tuple) else proj
            pos = _pos_conv_preact(t.encoder.pos_conv_embed, proj)
            out.append((pool_frames(proj[0], self.factor), pool_frames(pos[0], self.factor)))
            frames += out[-1][0].shape[0]
            if frames >= max_frames:
                break
        return out


def _pos_conv_preact(pos: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The positional conv's output before its activation, [B, T, D] (HF: conv -> same-pad -> activation)."""
    h = x.transpose(1, 2)
    if getattr(pos, "batch_norm", None) is not None:
        h = pos.batch_norm(h)
    return pos.padding(pos.conv(h)).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# CNN


def _norm_slice(norm: nn.Module, kept: torch.Tensor) -> nn.Module:
    """The group norm (one group per channel in HF) or layer norm of a conv layer, restricted to ``kept``."""
    k = len(kept)
    if isinstance(norm, nn.GroupNorm):
        if norm.num_groups != norm.num_channels:
            raise PruneError("thinning a CNN needs one group-norm group per channel (HF HuBERT/WavLM)")
        new = nn.GroupNorm(k, k, eps=norm.eps, affine=norm.affine)
    else:
        new = nn.LayerNorm(k, eps=norm.eps, elementwise_affine=norm.elementwise_affine)
    if getattr(new, "weight", None) is not None:
        new.weight.data.copy_(norm.weight.data[kept])
        new.bias.data.copy_(norm.bias.data[kept])
    return new.to(norm.weight.device if norm.weight is not None else "cpu")


def _new_conv(conv: nn.Conv1d, weight: torch.Tensor, bias: torch.Tensor | None, kernel: int, stride: int) -> nn.Conv1d:
    new = nn.Conv1d(weight.shape[1], weight.shape[0], kernel, stride=stride, bias=bias is not None)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new.to(conv.weight.device, conv.weight.dtype)


def _reduce_rate_conv(conv: nn.Conv1d, factor: int) -> nn.Conv1d:
    """Kernel = stride = factor x the old ones (old kernel == stride): the average of ``factor`` old outputs."""
    k, s = conv.kernel_size[0], conv.stride[0]
    w = conv.weight.data.repeat(1, 1, factor) / factor
    return _new_conv(conv, w, None if conv.bias is None else conv.bias.data, k * factor, s * factor)


@torch.no_grad()
def _thin_cnn(
    teacher: nn.Module, calib: _Calib, channels: Sequence[int], factor: int, opts: PruneOptions,
    report: FrontEndInitReport,
) -> tuple[nn.ModuleList, torch.Tensor]:
    """The thinned (and, for factor > 1, strided) CNN layers and the kept channels of the last layer."""
    layers = copy.deepcopy(teacher.feature_extractor.conv_layers).float().eval()
    n = len(layers)
    if factor > 1:
        layers[n - 1].conv = _reduce_rate_conv(layers[n - 1].conv, factor)
    proj = teacher.feature_projection
    kept_last = torch.arange(layers[n - 1].conv.out_channels)
    for i in range(n):
        conv = layers[i].conv
        width, k = conv.out_channels, int(channels[i])
        if k > width:
            raise PruneError(f"frontend.conv_channels={k} is wider than the teacher's conv layer {i} ({width}): "
                             "channel selection can only thin")
        if k == width:
            report.conv_rel_errors.append(0.0)
            continue
        sketch = FrameSketch(width, max(opts.sketch_rows, 2 * width), opts.seed + 1000 + i)
        for w in calib.wavs:
            h = w[None, None]
            for layer in layers[: i + 1]:
                h = layer(h)
            sketch.add(h[0].T)
        y = sketch.matrix()
        if i + 1 < n:
            mod = _stat_conv(i, layers[i + 1].conv, y, opts)
        else:
            mod = _last_layer_module(i, proj, y, opts)
        kept_np, t = _id_selection(mod, k, correct=True)
        kept = torch.from_numpy(kept_np)
        report.conv_rel_errors.append(float(mod.curve.rel_err[k]))
        bias = None if conv.bias is None else conv.bias.data[kept]
        layers[i].conv = _new_conv(conv, conv.weight.data[kept], bias, conv.kernel_size[0], conv.stride[0])
        if hasattr(layers[i], "layer_norm"):
            layers[i].layer_norm = _norm_slice(layers[i].layer_norm, kept)
        if i + 1 < n:
            nxt = layers[i + 1].conv
            w_next = torch.einsum("oct,jc->ojt", nxt.weight.data.double(), torch.from_numpy(t)).float()
            layers[i + 1].conv = _new_conv(
                nxt, w_next, None if nxt.bias is None else nxt.bias.data, nxt.kernel_size[0], nxt.stride[0]
            )
        else:
            kept_last = kept
    report.conv_channels = [int(layer.conv.out_channels) for layer in layers]
    return layers, kept_last


def _last_layer_module(i: int, proj: nn.Module, y: np.ndarray, opts: PruneOptions) -> _Module:
    """Like ``stat._stat_conv`` for the last conv layer, whose reader is the (layer-normed) projection."""
    from speechdistill.prune.decompose import pivoted_qr
    from speechdistill.prune.stat import _curve

    w = proj.projection.weight.detach().double().norm(dim=0)
    ln = getattr(proj, "layer_norm", None)
    if ln is not None and ln.weight is not None:
        w = w * ln.weight.detach().double().abs()
    w = w.numpy()
    qr = pivoted_qr((y * w.astype(np.float32)[None, :]).astype(np.float32, copy=False))
    err = qr.errors()
    return _Module(_curve("conv", i, err, err[0], opts.min_channels), err[0], qr=qr, scale=w)


@torch.no_grad()
def _refit_projection(
    student: nn.Module, teacher: nn.Module, kept_last: torch.Tensor, calib: _Calib,
    targets: list[tuple[torch.Tensor, torch.Tensor]], report: FrontEndInitReport,
) -> None:
    """LayerNorm affine = the teacher's on the kept channels; projection = least squares to the teacher's."""
    s_proj, t_proj = student.feature_projection, teacher.feature_projection
    s_ln, t_ln = getattr(s_proj, "layer_norm", None), getattr(t_proj, "layer_norm", None)
    if s_ln is not None and t_ln is not None and s_ln.weight is not None and t_ln.weight is not None:
        s_ln.weight.data.copy_(t_ln.weight.data[kept_last])
        s_ln.bias.data.copy_(t_ln.bias.data[kept_last])
    c = s_proj.projection.in_features
    gram = torch.zeros(c + 1, c + 1, dtype=torch.float64)
    cross = torch.zeros(c + 1, s_proj.projection.out_features, dtype=torch.float64)
    yy = torch.zeros((), dtype=torch.float64)
    for w, (target, _) in zip(calib.wavs, targets):
        feats = student.feature_extractor(w[None]).transpose(1, 2)[0]
        z = s_ln(feats) if s_ln is not None else feats
        n = min(z.shape[0], target.shape[0])
        x = torch.cat([z[:n], torch.ones(n, 1)], 1).double()
        y = target[:n].double()
        gram += x.T @ x
        cross += x.T @ y
        yy += y.pow(2).sum()
    beta = _ridge_solve(gram, cross)  # [c + 1, D]
    s_proj.projection.weight.data.copy_(beta[:c].T.float())
    s_proj.projection.bias.data.copy_(beta[c].float())
    report.projection_rel_residual = _rel_residual(gram, cross, yy, beta)


def _restrict_pos_conv(student_pos: nn.Module, teacher_pos: nn.Module) -> None:
    """The teacher's taps restricted to each new group's input channels and to the central taps."""
    wt = pos_conv_weight(teacher_pos).float()  # [D, D/G, K]
    d, cg_t, k_t = wt.shape
    s_conv = student_pos.conv
    cg, k = s_conv.in_channels // s_conv.groups, s_conv.kernel_size[0]
    if cg_t % cg:
        raise PruneError(
            f"pos_conv_init=restrict needs the new positional-conv groups to split the teacher's "
            f"({d // cg_t} groups of {cg_t}); {s_conv.groups} groups of {cg} do not"
        )
    out = torch.arange(d)
    group_start = (out // cg) * cg  # first input channel of each output's new group
    local = (group_start[:, None] + torch.arange(cg)[None, :]) % cg_t  # [D, cg] index in the teacher group
    taps = torch.arange(k) - k // 2 + k_t // 2
    ok = (taps >= 0) & (taps < k_t)
    w = torch.zeros(d, cg, k)
    sel = wt[out[:, None], local]  # [D, cg, K_t]
    w[:, :, ok] = sel[:, :, taps[ok]]
    set_pos_conv_weight(student_pos, w, teacher_pos.conv.bias.detach() if teacher_pos.conv.bias is not None else None)


@torch.no_grad()
def _fit_pos_conv(
    student: nn.Module, calib: _Calib, targets: list[tuple[torch.Tensor, torch.Tensor]], report: FrontEndInitReport,
) -> bool:
    """Least-squares taps (and bias) per group; False when the fit would be too large (caller restricts)."""
    pos = student.encoder.pos_conv_embed
    conv = pos.conv
    d, groups, k = conv.in_channels, conv.groups, conv.kernel_size[0]
    cg = d // groups
    unknowns = cg * k + 1
    if groups * unknowns * unknowns > MAX_FIT_GRAM:
        log.info("positional conv: %d groups x %d unknowns is too large for the least-squares fit; using restrict",
                 groups, unknowns)
        return False
    gram = torch.zeros(groups, unknowns, unknowns, dtype=torch.float64)
    cross = torch.zeros(groups, unknowns, cg, dtype=torch.float64)
    yy = torch.zeros(groups, dtype=torch.float64)
    frames = 0
    for w, (_, target) in zip(calib.wavs, targets):
        feats = student.feature_extractor(w[None]).transpose(1, 2)
        x = student.feature_projection(feats)
        x = (x[0] if isinstance(x, tuple) else x)[0]  # [T, D]
        n = min(x.shape[0], target.shape[0], MAX_POS_FIT_FRAMES - frames)
        if n <= 0:
            break
        x, y = x[:n], target[:n]
        # Windows exactly as the conv reads them (zero padding k // 2, the same-pad layer drops the extra frame).
        xp = torch.nn.functional.pad(x.T, (k // 2, k // 2))  # [D, n + 2 (k // 2)]
        win = xp.unfold(1, k, 1)[:, :n]  # [D, n, k]
        xg = win.reshape(groups, cg, n, k).permute(0, 2, 1, 3).reshape(groups, n, cg * k)
        xg = torch.cat([xg, torch.ones(groups, n, 1)], 2)
        yg = y.T.reshape(groups, cg, n).transpose(1, 2)  # [G, n, cg]
        gram += (xg.transpose(1, 2) @ xg).double()
        cross += (xg.transpose(1, 2) @ yg).double()
        yy += yg.double().pow(2).sum((1, 2))
        frames += n
    beta = _ridge_solve(gram, cross)  # [G, cg*k + 1, cg]
    weight = beta[:, :-1].reshape(groups, cg, k, cg).permute(0, 3, 1, 2).reshape(d, cg, k)
    bias = beta[:, -1].reshape(d)
    set_pos_conv_weight(pos, weight.float(), bias.float())
    report.pos_conv_rel_residual = _rel_residual(gram, cross, yy, beta)
    return True


def _rel_residual(gram: torch.Tensor, cross: torch.Tensor, yy: torch.Tensor, beta: torch.Tensor) -> float:
    """||X b - y|| / ||y|| from the normal-equation sums (no need to keep X)."""
    fit = (beta * (gram @ beta)).sum() - 2 * (beta * cross).sum() + yy.sum()
    return float(fit.clamp(min=0.0) / yy.sum().clamp(min=1e-30)) ** 0.5


@torch.no_grad()
def _x0_cosine(student: nn.Module, teacher: nn.Module, calib: _Calib, factor: int, limit: int = 16) -> float:
    num, den = 0.0, 0
    for w in calib.wavs[:limit]:
        lengths = torch.tensor([w.numel()])
        s = hf_encode(student, w[None], lengths, upto_layer=min(1, len(student.encoder.layers)) or None)
        t = hf_encode(teacher, w[None], lengths, upto_layer=1)
        sx, tx = s.hidden_states[0][0], pool_frames(t.hidden_states[0][0], factor)
        n = min(sx.shape[0], tx.shape[0])
        num += float(torch.nn.functional.cosine_similarity(sx[:n], tx[:n], dim=-1).sum())
        den += n
    return num / max(den, 1)


def init_front_end(
    student: nn.Module,
    teacher: nn.Module,
    fe: FrontEndConfig,
    rebuilt: Sequence[str],
    wavs: Sequence[np.ndarray] | None,
    normalize: bool = False,
    options: PruneOptions | None = None,
) -> FrontEndInitReport:
    """Initialise the modules ``models.edge_frontend.reshape_front_end`` rebuilt in ``student`` (an HF model) from
    ``teacher`` (its HF model), on calibration waveforms ``wavs`` (16 kHz, 1-D)."""
    student, teacher = hf_model_of(student), hf_model_of(teacher)
    opts = options or PruneOptions(sketch_rows=4096)
    report = FrontEndInitReport(pos_conv_init=fe.pos_conv_init if "encoder.pos_conv_embed" in rebuilt else "teacher")
    factor = int(fe.frame_rate_reduction)
    # The CNN comes from the teacher's unless it is thinned with random weights (a lower frame rate alone
    # only restrides the last layer, which needs no calibration).
    cnn_from_teacher = "feature_extractor" in rebuilt and (fe.conv_init == "id" or not fe.conv_channels)
    cnn_id = cnn_from_teacher and bool(fe.conv_channels)
    pos_fit = "encoder.pos_conv_embed" in rebuilt and fe.pos_conv_init == "fit"
    if (cnn_id or pos_fit) and not wavs:
        raise PruneError("front-end initialisation (conv_init=id / pos_conv_init=fit) needs calibration audio: "
                         "set frontend.calib_manifest (default: the training manifest)")
    was_training = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    try:
        with torch.no_grad(), blas_threads(opts.blas_threads):
            calib = _Calib(teacher, wavs or [np.zeros(16000, np.float32)], normalize, factor)
            report.calibration_utterances = len(wavs or [])
            targets = calib.teacher_features() if (cnn_id or pos_fit) else []
            if cnn_from_teacher:
                channels = [fe.conv_channels or c for c in teacher.config.conv_dim]
                layers, kept_last = _thin_cnn(teacher, calib, channels, factor, opts, report)
                student.feature_extractor.conv_layers.load_state_dict(layers.state_dict())
                if "feature_projection" in rebuilt:
                    _refit_projection(student, teacher, kept_last, calib, targets, report)
            if "encoder.pos_conv_embed" in rebuilt and (
                fe.pos_conv_init == "restrict" or (pos_fit and not _fit_pos_conv(student, calib, targets, report))
            ):
                _restrict_pos_conv(student.encoder.pos_conv_embed, teacher.encoder.pos_conv_embed)
                report.pos_conv_init = "restrict"
            if wavs:
                report.x0_cosine = _x0_cosine(student, teacher, calib, factor)
    finally:
        student.train(was_training[0])
        teacher.train(was_training[1])
    log.info("front end initialised: CNN %s (selection errors %s), projection residual %s, pos conv %s (residual %s), "
             "x0 cosine to the teacher %s", report.conv_channels or "teacher's",
             [round(e, 3) for e in report.conv_rel_errors], _fmt(report.projection_rel_residual),
             report.pos_conv_init, _fmt(report.pos_conv_rel_residual), _fmt(report.x0_cosine))
    return report


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
