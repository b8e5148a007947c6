"""Compactors for weight-inherited distillation (WID; Wu et al., Findings of NAACL 2024, arXiv 2305.09098).

A copy of the teacher in which every linear weight W of the transformer (attention Q, K, V and output,
FFN in and out), the feature projection and the positional convolution becomes R·W·L: L (in x in, the
"column" compactor) and R (out x out, the "row" compactor) start as identities, so before training the
model *is* the teacher, bit for bit.  Training shrinks the model by masking compactor columns and rows
(``WidthMasks``): the residual-stream dims (one mask shared by every layer), the attention inner dims of
each layer and the FFN neurons of each layer.  ``compactor_merge.merge_compactors`` folds R·W·L into
the kept rows and columns and writes a stock, narrower HF model.

Design choices (ours, for speech encoders):
- The compactors wrap the HF modules in place, so the stock HF forward (and ``hf_encode``) runs the
  model: ``CompactedLinear`` exposes ``weight``/``bias`` as the effective R·W·L and R·b, which is also
  what WavLM's attention reads directly.  Forming R·W·L once per step costs less than applying R and L
  to every frame when batches hold thousands of frames.
- The positional convolution is grouped; its compactors are block-diagonal (one block per conv group)
  so the merged conv is still a stock grouped conv, and the residual mask keeps the same number of dims
  in every group (``methods.wid_masks`` selects that way).
- ``hard`` mode applies the masks exactly (masked rows/columns zeroed, masked LayerNorm outputs zero):
  that model computes what the merged student computes.  Training runs soft (``hard=False``): masked
  entries are driven toward zero by a decay gradient, as in the released code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speechdistill.config import ConfigError
from speechdistill.models.encoder import hf_encode, hf_model_of
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.hf import family_of

#: An axis a mask applies to: ("residual", -1), ("attention", layer) or ("ffn", layer).
Axis = tuple[str, int]
RESIDUAL: Axis = ("residual", -1)
#: (parameter, function returning a bool "kept" tensor broadcastable to the parameter's shape)
DecayTarget = tuple[nn.Parameter, Callable[[], torch.Tensor]]


class CompactorError(ConfigError):
    """A model, target or mask state that compactors cannot represent (names the module or widths)."""


class WidthMasks(nn.Module):
    """Kept residual dims (shared by every layer), attention inner dims and FFN neurons per layer.

    Buffers, so checkpoints carry them.  ``hard``: apply the masks exactly (see module doc)."""

    def __init__(self, hidden: int, num_layers: int, attention_dim: int, ffn_dim: int):
        super().__init__()
        self.register_buffer("residual", torch.ones(hidden, dtype=torch.bool))
        self.register_buffer("attention", torch.ones(num_layers, attention_dim, dtype=torch.bool))
        self.register_buffer("ffn", torch.ones(num_layers, ffn_dim, dtype=torch.bool))
        self.hard = False
        # Cached on the host: LayerNorm asks every call, and asking the tensor would sync the GPU.
        self.residual_full = True
        self.active = False  # anything masked at all

    def keep(self, axis: Axis) -> torch.Tensor:
        kind, layer = axis
        t = getattr(self, kind)
        return t if kind == "residual" else t[layer]

    def refresh(self) -> None:
        self.residual_full = bool(self.residual.all())
        self.active = not (self.residual_full and bool(self.attention.all()) and bool(self.ffn.all()))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()

    @contextmanager
    def applied(self, on: bool = True) -> Iterator[None]:
        """Within the block the masks apply exactly (the merged student's function)."""
        old, self.hard = self.hard, on
        try:
            yield
        finally:
            self.hard = old


class _MaskUser(nn.Module):
    """Holds the shared ``WidthMasks`` without registering it as a child (it belongs to the encoder)."""

    def _bind(self, masks: WidthMasks) -> None:
        self._masks_ref = (masks,)

    @property
    def masks(self) -> WidthMasks:
        return self._masks_ref[0]


class CompactedLinear(_MaskUser):
    """``R · (W · L · x + b)`` with identity-initialised compactors L (``col``) and R (``row``)."""

    def __init__(self, linear: nn.Linear, masks: WidthMasks, in_axis: Axis | None, out_axis: Axis | None):
        super().__init__()
        self._bind(masks)
        self.in_axis, self.out_axis = in_axis, out_axis
        self.base_weight = linear.weight
        self.base_bias = linear.bias
        w = linear.weight
        self.col = nn.Parameter(torch.eye(w.shape[1], dtype=w.dtype, device=w.device))
        self.row = nn.Parameter(torch.eye(w.shape[0], dtype=w.dtype, device=w.device))

    @property
    def in_features(self) -> int:
        return self.base_weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.base_weight.shape[0]

    def _row(self) -> torch.Tensor:
        m = self.masks
        return self.row * m.keep(self.out_axis)[:, None] if m.hard and self.out_axis else self.row

    def _col(self) -> torch.Tensor:
        m = self.masks
        return self.col * m.keep(self.in_axis)[None, :] if m.hard and self.in_axis else self.col

    @property
    def weight(self) -> torch.Tensor:
        return self._row() @ self.base_weight @ self._col()

    @property
    def bias(self) -> torch.Tensor | None:
        return None if self.base_bias is None else self._row() @ self.base_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def decay_targets(self) -> Iterator[DecayTarget]:
        m = self.masks
        if self.in_axis:
            yield self.col, lambda: m.keep(self.in_axis)[None, :]
        if self.out_axis:
            yield self.row, lambda: m.keep(self.out_axis)[:, None]
            if self.base_bias is not None:
                yield self.base_bias, lambda: m.keep(self.out_axis)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, in={self.in_axis}, out={self.out_axis}"


def masked_layer_norm(
    x: torch.Tensor, keep: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """LayerNorm whose mean and variance are taken over the kept dims only (WID); every dim is
    normalised with them.  With every dim kept it is ``torch.nn.functional.layer_norm``."""
    dtype = x.dtype
    x = x.float()
    k = keep.to(x.dtype)
    n = k.sum()
    mean = (x * k).sum(-1, keepdim=True) / n
    var = (((x - mean) * k) ** 2).sum(-1, keepdim=True) / n
    y = (x - mean) * torch.rsqrt(var + eps) * weight.float() + bias.float()
    return y.to(dtype)


class MaskedLayerNorm(_MaskUser):
    """A residual-stream LayerNorm of the teacher, normalised over the kept residual dims."""

    def __init__(self, norm: nn.LayerNorm, masks: WidthMasks):
        super().__init__()
        if not norm.elementwise_affine or norm.bias is None:
            raise CompactorError("masked LayerNorm needs an affine LayerNorm with a bias")
        self._bind(masks)
        self.weight, self.bias = norm.weight, norm.bias
        self.eps = norm.eps
        self.normalized_shape = norm.normalized_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.masks
        if m.residual_full:  # the teacher's own op: step 0 is exact
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        y = masked_layer_norm(x, m.residual, self.weight, self.bias, self.eps)
        return y * m.residual.to(y.dtype) if m.hard else y

    def decay_targets(self) -> Iterator[DecayTarget]:
        m = self.masks
        yield self.weight, lambda: m.residual
        yield self.bias, lambda: m.residual


class CompactedPosConv(_MaskUser):
    """The positional convolution with block-diagonal compactors (one block per conv group) on its
    input and output channels, which are residual-stream dims."""

    def __init__(self, pos: nn.Module, masks: WidthMasks):
        super().__init__()
        if getattr(pos, "batch_norm", None) is not None:
            raise CompactorError("a positional conv with batch norm (conv_pos_batch_norm) is not supported")
        self._bind(masks)
        self.conv, self.padding, self.activation = pos.conv, pos.padding, pos.activation
        groups, channels = self.conv.groups, self.conv.out_channels
        n = channels // groups
        eye = torch.eye(n, dtype=self.conv.bias.dtype, device=self.conv.bias.device)
        self.col = nn.Parameter(eye.repeat(groups, 1, 1))  # [G, n, n]
        self.row = nn.Parameter(eye.repeat(groups, 1, 1))

    def _blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.masks
        if not m.hard:
            return self.row, self.col
        keep = m.residual.view(self.col.shape[0], -1).to(self.col.dtype)
        return self.row * keep[:, :, None], self.col * keep[:, None, :]

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight [C, C/G, K] and bias [C] of the conv with the compactors folded in."""
        row, col = self._blocks()
        w = self.conv.weight  # weight-normed: g * v / |v|
        g, n = col.shape[0], col.shape[1]
        wg = w.view(g, n, n, w.shape[-1])
        # Contiguous like the stock weight: conv kernels differ by memory layout, and step 0 must be exact.
        w_eff = torch.einsum("goa,gaik,gij->gojk", row, wg, col).reshape(w.shape).contiguous()
        b_eff = torch.einsum("goa,ga->go", row, self.conv.bias.view(g, n)).reshape(-1)
        return w_eff, b_eff

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        w, b = self.effective()
        c = self.conv
        x = F.conv1d(hidden_states.transpose(1, 2), w, b, c.stride, c.padding, c.dilation, c.groups)
        return self.activation(self.padding(x)).transpose(1, 2)

    def decay_targets(self) -> Iterator[DecayTarget]:
        m = self.masks
        g = self.col.shape[0]
        yield self.col, lambda: m.residual.view(g, -1)[:, None, :]
        yield self.row, lambda: m.residual.view(g, -1)[:, :, None]
        yield self.conv.bias, lambda: m.residual


class CompactorEncoder(nn.Module):
    """A HuBERT / WavLM / wav2vec 2.0 model carrying compactors, behind the encoder contract
    (``models.protocol.Encoder``).  ``save_pretrained`` writes the merged stock model."""

    def __init__(self, model: nn.Module, normalize: bool = False, batched_cnn: bool = False):
        super().__init__()
        self.model = hf_model_of(model)
        self.normalize = normalize
        self.batched_cnn = batched_cnn
        cfg = self.model.config
        self.family = family_of(cfg)
        _check_supported(self.model)
        layers = self.model.encoder.layers
        self.masks = WidthMasks(cfg.hidden_size, len(layers), cfg.hidden_size, cfg.intermediate_size)
        self.linears: list[dict[str, CompactedLinear]] = []
        self._wrap(self.masks)

    def _wrap(self, masks: WidthMasks) -> None:
        model = self.model
        fp = model.feature_projection
        fp.projection = CompactedLinear(fp.projection, masks, None, RESIDUAL)
        enc = model.encoder
        enc.pos_conv_embed = CompactedPosConv(enc.pos_conv_embed, masks)
        enc.layer_norm = MaskedLayerNorm(enc.layer_norm, masks)
        for i, layer in enumerate(enc.layers):
            attn, ff = layer.attention, layer.feed_forward
            att, ffn = ("attention", i), ("ffn", i)
            for name in ("q_proj", "k_proj", "v_proj"):
                setattr(attn, name, CompactedLinear(getattr(attn, name), masks, RESIDUAL, att))
            attn.out_proj = CompactedLinear(attn.out_proj, masks, att, RESIDUAL)
            ff.intermediate_dense = CompactedLinear(ff.intermediate_dense, masks, RESIDUAL, ffn)
            ff.output_dense = CompactedLinear(ff.output_dense, masks, ffn, RESIDUAL)
            layer.layer_norm = MaskedLayerNorm(layer.layer_norm, masks)
            layer.final_layer_norm = MaskedLayerNorm(layer.final_layer_norm, masks)
            self.linears.append({
                "q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj, "out": attn.out_proj,
                "ffn_in": ff.intermediate_dense, "ffn_out": ff.output_dense,
            })

    # -- encoder contract ------------------------------------------------------------------------

    @property
    def config(self):
        return self.model.config

    @property
    def num_output_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def hidden_size(self) -> int:
        """Width of the returned states: the teacher's (masked dims are zero under ``masks.applied()``)."""
        return self.model.config.hidden_size

    @property
    def num_heads(self) -> int:
        return self.model.config.num_attention_heads

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        return hf_encode(self.model, wav, lengths, upto_layer=upto_layer, normalize=self.normalize,
                         batched_cnn=self.batched_cnn)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        return self.encode(wav, lengths, upto_layer)

    def save_pretrained(self, out_dir: str | Path, **kwargs) -> None:
        """The merged stock HF model (see ``compactor_merge``)."""
        from speechdistill.models.compactor_merge import merge_compactors

        merge_compactors(self).save_pretrained(out_dir, **kwargs)

    # -- WID machinery ---------------------------------------------------------------------------

    def compactors(self) -> Iterator[nn.Parameter]:
        for m in self.model.modules():
            if isinstance(m, (CompactedLinear, CompactedPosConv)):
                yield m.col
                yield m.row

    def decay_targets(self) -> Iterator[DecayTarget]:
        for m in self.model.modules():
            if isinstance(m, (CompactedLinear, CompactedPosConv, MaskedLayerNorm)):
                yield from m.decay_targets()

    @property
    def pos_conv_groups(self) -> int:
        return self.model.encoder.pos_conv_embed.conv.groups


def _check_supported(model: nn.Module) -> None:
    cfg = model.config
    if getattr(cfg, "adapter_attn_dim", None):
        raise CompactorError("attention adapters (adapter_attn_dim) are not supported by WID compactors")
    layer0 = model.encoder.layers[0] if len(model.encoder.layers) else None
    if layer0 is None:
        raise CompactorError("the model has no transformer layers to compact")
    for name in ("attention", "feed_forward", "layer_norm", "final_layer_norm"):
        if not hasattr(layer0, name):
            raise ModelLoadError(f"{type(layer0).__name__} has no {name}: not a HuBERT/WavLM/wav2vec 2.0 layer")
    for i, layer in enumerate(model.encoder.layers):
        q, ffn = layer.attention.q_proj, layer.feed_forward.intermediate_dense
        if (q.out_features, ffn.out_features) != (cfg.hidden_size, cfg.intermediate_size):
            # e.g. a `prune`d encoder: per-layer widths a stock config (and WID's merge) cannot express
            raise CompactorError(
                f"layer {i + 1} is {q.out_features} attention dims / {ffn.out_features} FFN wide, not the config's "
                f"{cfg.hidden_size} / {cfg.intermediate_size}: WID needs a stock HuBERT/WavLM/wav2vec 2.0 teacher"
            )


def compactor_encoder_from(teacher_encoder: nn.Module, layers: list[int] | None = None) -> CompactorEncoder:
    """A compactor model from a (frozen) teacher encoder: a deep copy, unfrozen, layer drop 0, optionally
    keeping only the 1-based teacher ``layers`` (in the given order)."""
    import copy

    model = copy.deepcopy(hf_model_of(teacher_encoder))
    model.requires_grad_(True)
    model.config.layerdrop = 0.0
    if layers:
        n = len(model.encoder.layers)
        bad = [i for i in layers if not 1 <= i <= n]
        if bad:
            raise CompactorError(f"layers {bad} out of range: the teacher has layers 1..{n}")
        if family_of(model.config) == "wavlm" and layers[0] != 1:
            # Layer 1 owns the relative position embedding every later WavLM layer reuses.
            raise CompactorError(f"a WavLM student must keep teacher layer 1 first (got layers={layers})")
        model.encoder.layers = nn.ModuleList([model.encoder.layers[i - 1] for i in layers])
        model.config.num_hidden_layers = len(layers)
    model.train()
    return CompactorEncoder(model, normalize=getattr(teacher_encoder, "normalize", False),
                            batched_cnn=getattr(teacher_encoder, "batched_cnn", False))
