"""Structurally pruned HuBERT / WavLM / wav2vec 2.0 encoders (output of ``speechdistill prune``).

A pruned encoder has per-layer head counts, per-layer FFN widths and optionally thinner CNN
channels, which the stock HF configs cannot express.  ``PrunedEncoderConfig`` carries
the base family and the base HF config dict plus the per-layer shapes; ``PrunedEncoderModel`` builds
the stock HF base model from the base config, then swaps in smaller modules so that
``from_pretrained`` loads the saved state dict exactly.

Attention:
- HuBERT / wav2vec 2.0 keep the stock attention module with smaller q/k/v/out projections: in
  transformers 5 it reshapes with ``view(..., -1, head_dim)``, so the head count follows the shapes.
- WavLM gets ``PrunedWavLMAttention`` in every layer.  Layer 0 computes a relative position bias for
  all *original* heads and later layers reuse it, each gated by a per-head gate computed from the
  head's slice of the layer input.  A pruned layer therefore indexes the shared bias, the input
  slices and ``gru_rel_pos_const`` by its kept *original* head ids (``kept_heads`` in the config),
  and layer 0 keeps its full ``rel_attn_embed`` (num_buckets x original heads) even when its own
  heads are pruned, because later layers need the bias of heads layer 0 dropped.

Config attributes the base config has and this one does not (``conv_kernel``, ``hidden_size``,
``feat_extract_norm``, ...) are read through to the base config, so code written for HF configs
(``config_output_lengths(model.config, ...)``) works on pruned models unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from speechdistill.models.encoder import EncoderOutput, hf_encode, save_feature_extractor

log = logging.getLogger(__name__)

PRUNED_MODEL_TYPE = "pruned_encoder"
# Keys of the base HF config that describe a checkpoint, not an architecture: not worth carrying.
_DROP_BASE_KEYS = ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype")


class PrunedModelError(ValueError):
    """A pruned-model config or state dict that does not describe a consistent model."""


class PrunedEncoderConfig(PreTrainedConfig):
    """Config of a pruned encoder.

    ``base_model_type``: "hubert" | "wavlm" | "wav2vec2".  ``base_config``: the HF config dict of
    the unpruned model.  ``num_heads`` / ``kept_heads`` (original head ids, ascending) /
    ``intermediate_sizes``: one entry per transformer layer.  ``conv_dims``: CNN channels per conv
    layer when the CNN was pruned (else the base ``conv_dim``).  ``normalize_input``: waveform
    normalisation the encoder expects.  ``prune_method``, ``keep_macs``, ``source_model``:
    provenance.
    """

    model_type = PRUNED_MODEL_TYPE

    base_model_type: str = "hubert"
    base_config: dict[str, Any] | None = None
    num_heads: list[int] | None = None
    kept_heads: list[list[int]] | None = None
    intermediate_sizes: list[int] | None = None
    conv_dims: list[int] | None = None
    normalize_input: bool = False
    prune_method: str | None = None
    keep_macs: float | None = None
    source_model: str | None = None

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: read through to the base config (see module doc).
        if name.startswith("_"):
            raise AttributeError(name)
        d = self.__dict__
        base = d.get("base_config")
        if base is not None:
            if name == "conv_dim" and d.get("conv_dims") is not None:
                return tuple(d["conv_dims"])
            if name in base:
                value = base[name]
                return tuple(value) if isinstance(value, list) else value
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def build_base_config(self) -> PreTrainedConfig:
        """The HF config the pruned model is built from (base config, CNN widths overridden)."""
        from speechdistill.models.hf import FAMILIES

        if self.base_model_type not in FAMILIES:
            raise PrunedModelError(
                f"pruned encoder config: base_model_type {self.base_model_type!r} is not one of {', '.join(FAMILIES)}"
            )
        if not self.base_config:
            raise PrunedModelError("pruned encoder config has no base_config")
        cfg_cls, _ = FAMILIES[self.base_model_type]
        kwargs = {k: v for k, v in self.base_config.items() if k not in _DROP_BASE_KEYS and k != "model_type"}
        if self.conv_dims is not None:
            kwargs["conv_dim"] = list(self.conv_dims)
        return cfg_cls(**kwargs)

    def validate_shapes(self) -> None:
        base = self.base_config or {}
        layers = int(base.get("num_hidden_layers", 0))
        heads0 = int(base.get("num_attention_heads", 1))
        for name in ("num_heads", "kept_heads", "intermediate_sizes"):
            value = getattr(self, name)
            if value is None or len(value) != layers:
                raise PrunedModelError(
                    f"pruned encoder config: {name} must have one entry per layer ({layers}), got {value!r}"
                )
        for i, (n, kept) in enumerate(zip(self.num_heads, self.kept_heads)):
            if n != len(kept) or n < 1 or sorted(set(kept)) != list(kept) or kept[-1] >= heads0 or kept[0] < 0:
                raise PrunedModelError(
                    f"pruned encoder config: layer {i} num_heads={n} and kept_heads={kept} disagree "
                    f"(need {n} distinct ascending ids in [0, {heads0}))"
                )
        if self.conv_dims is not None and len(self.conv_dims) != len(base.get("conv_dim", ())):
            raise PrunedModelError(
                f"pruned encoder config: conv_dims has {len(self.conv_dims)} entries, the CNN has "
                f"{len(base.get('conv_dim', ()))} layers"
            )


def base_config_dict(config: PreTrainedConfig) -> dict[str, Any]:
    d = config.to_dict()
    for k in _DROP_BASE_KEYS:
        d.pop(k, None)
    return d


# ---------------------------------------------------------------------------------------------
# Modules


class PrunedWavLMAttention(nn.Module):
    """WavLM gated-relative-position attention over a subset of the original heads.

    Parameter names match ``WavLMAttention`` so stock WavLM state dicts load into it (all heads
    kept).  ``position_bias`` passed between layers holds the *ungated* bias of all original
    heads, shape [orig_heads, T, T] (or HF's [B * orig_heads, T, T]).
    """

    # Reuse HF's bucketing so the bias stays bit-compatible with stock WavLM.
    compute_bias = WavLMAttention.compute_bias
    _relative_positions_bucket = WavLMAttention._relative_positions_bucket

    def __init__(
        self,
        embed_dim: int,
        orig_num_heads: int,
        kept_heads: list[int],
        dropout: float = 0.0,
        num_buckets: int = 320,
        max_distance: int = 800,
        has_relative_position_bias: bool = True,
    ):
        super().__init__()
        if embed_dim % orig_num_heads:
            raise PrunedModelError(f"embed_dim {embed_dim} is not divisible by {orig_num_heads} heads")
        self.embed_dim = embed_dim
        self.orig_num_heads = orig_num_heads
        self.kept_heads = list(kept_heads)
        self.num_heads = len(self.kept_heads)
        self.head_dim = embed_dim // orig_num_heads
        self.dropout = dropout
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        if has_relative_position_bias:
            self.rel_attn_embed = nn.Embedding(num_buckets, orig_num_heads)

    @classmethod
    def from_stock(cls, attn: WavLMAttention, share: bool = True) -> PrunedWavLMAttention:
        """All heads kept; ``share=True`` reuses the stock module's parameters (no copy)."""
        new = cls(
            attn.embed_dim, attn.num_heads, list(range(attn.num_heads)), attn.dropout, attn.num_buckets,
            attn.max_distance, has_relative_position_bias=hasattr(attn, "rel_attn_embed"),
        ).to(attn.q_proj.weight.device, attn.q_proj.weight.dtype)
        if share:
            for name in ("q_proj", "k_proj", "v_proj", "out_proj", "gru_rel_pos_linear", "rel_attn_embed"):
                if hasattr(attn, name):
                    setattr(new, name, getattr(attn, name))
            new.gru_rel_pos_const = attn.gru_rel_pos_const
        else:
            new.load_state_dict(attn.state_dict())
        new.train(attn.training)
        return new

    def full_bias(self, position_bias: torch.Tensor | None, bsz: int, tgt_len: int) -> torch.Tensor:
        """Ungated bias of all original heads as [B or 1, orig_heads, T, T]."""
        h0 = self.orig_num_heads
        if position_bias is None:
            if not hasattr(self, "rel_attn_embed"):
                raise PrunedModelError("WavLM layer without relative position bias got no bias from layer 0")
            return self.compute_bias(tgt_len, tgt_len)[None]
        if position_bias.dim() == 3 and position_bias.shape[0] == h0:
            return position_bias[None]
        if position_bias.dim() == 3 and position_bias.shape[0] == bsz * h0:
            return position_bias.view(bsz, h0, tgt_len, tgt_len)
        if position_bias.dim() == 4:
            return position_bias
        raise PrunedModelError(f"unexpected WavLM position bias shape {tuple(position_bias.shape)}")

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        index: int = 0,  # WavLM layers pass it
        **kwargs,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        bsz, tgt_len, _ = hidden_states.shape
        bias = self.full_bias(position_bias, bsz, tgt_len)  # [B|1, H0, T, T]
        # A plain list, not a buffer: from_pretrained builds modules on the meta device and would leave
        # a non-persistent buffer uninitialised.
        kept = torch.tensor(self.kept_heads, dtype=torch.long, device=hidden_states.device)

        # Gate per kept head from the head's slice of the layer input (original head id).
        gated_in = hidden_states.view(bsz, tgt_len, self.orig_num_heads, self.head_dim)[:, :, kept]
        proj = self.gru_rel_pos_linear(gated_in.permute(0, 2, 1, 3))  # [B, Hk, T, 8]
        proj = proj.view(*proj.shape[:-1], 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)  # [B, Hk, T, 1] each
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
        gated_bias = gate * bias[:, kept]  # [B, Hk, T, T]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(bsz, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.q_proj(hidden_states)) * self.head_dim**-0.5
        k = heads(self.k_proj(hidden_states))
        v = heads(self.v_proj(hidden_states))
        scores = torch.matmul(q, k.transpose(-1, -2)) + gated_bias
        if attention_mask is not None:
            pad = attention_mask.ne(1)[:, None, None, :]  # same convention as HF WavLM
            scores = scores.masked_fill(pad, float("-inf"))
        attn = F.softmax(scores, dim=-1)
        attn = F.dropout(attn, p=self.dropout, training=self.training)
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(bsz, tgt_len, self.num_heads * self.head_dim)
        out = self.out_proj(ctx)
        full = bias[0] if bias.shape[0] == 1 else bias.reshape(-1, tgt_len, tgt_len)
        return out, None, full


def family_layers(model: nn.Module) -> nn.ModuleList:
    return model.encoder.layers


def resize_attention(attn: nn.Module, num_heads: int) -> None:
    """Give a stock HuBERT/wav2vec2 attention module ``num_heads`` heads (new, uninitialised weights)."""
    d, hd = attn.embed_dim, attn.head_dim
    ref = attn.q_proj.weight
    bias = attn.q_proj.bias is not None
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(attn, name, nn.Linear(d, num_heads * hd, bias=bias, device=ref.device, dtype=ref.dtype))
    attn.out_proj = nn.Linear(num_heads * hd, d, bias=attn.out_proj.bias is not None, device=ref.device, dtype=ref.dtype)
    attn.num_heads = num_heads


def resize_ffn(ff: nn.Module, width: int) -> None:
    ref = ff.intermediate_dense.weight
    d = ref.shape[1]
    ff.intermediate_dense = nn.Linear(d, width, device=ref.device, dtype=ref.dtype)
    ff.output_dense = nn.Linear(width, d, device=ref.device, dtype=ref.dtype)


def apply_pruned_shapes(
    model: nn.Module, family: str, kept_heads: list[list[int]], intermediate_sizes: list[int]
) -> None:
    """Rebuild every layer's attention / FFN of an HF base model with the given per-layer shapes."""
    layers = family_layers(model)
    if len(layers) != len(kept_heads) or len(layers) != len(intermediate_sizes):
        raise PrunedModelError(f"model has {len(layers)} layers, shapes given for {len(kept_heads)}")
    for i, layer in enumerate(layers):
        attn = layer.attention
        if family == "wavlm":
            stock = attn if isinstance(attn, WavLMAttention) else None
            orig = stock.num_heads if stock is not None else attn.orig_num_heads
            new = PrunedWavLMAttention(
                attn.embed_dim, orig, kept_heads[i], attn.dropout, attn.num_buckets, attn.max_distance,
                has_relative_position_bias=hasattr(attn, "rel_attn_embed"),
            ).to(attn.q_proj.weight.device, attn.q_proj.weight.dtype)
            layer.attention = new
        elif len(kept_heads[i]) != attn.num_heads:
            resize_attention(attn, len(kept_heads[i]))
        if intermediate_sizes[i] != layer.feed_forward.intermediate_dense.out_features:
            resize_ffn(layer.feed_forward, intermediate_sizes[i])


class PrunedEncoderModel(PreTrainedModel):
    """A pruned HF encoder behind the project encoder interface (``encode``, ``num_output_layers``,
    ``hidden_size``, ``config``, ``save_pretrained``).  ``.model`` is the (pruned) HF base model,
    as in ``HFEncoder``."""

    config_class = PrunedEncoderConfig
    main_input_name = "input_values"
    supports_gradient_checkpointing = False

    def __init__(self, config: PrunedEncoderConfig):
        super().__init__(config)
        from speechdistill.models.hf import FAMILIES

        config.validate_shapes()
        base_cfg = config.build_base_config()
        _, model_cls = FAMILIES[config.base_model_type]
        self.model = model_cls(base_cfg)
        apply_pruned_shapes(self.model, config.base_model_type, config.kept_heads, config.intermediate_sizes)
        self.batched_cnn = False  # models.protocol.Encoder: the traceable CNN for ONNX export
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Weights are always loaded or copied from the pruner; init only keeps fresh modules finite.
        if isinstance(module, PrunedWavLMAttention):
            nn.init.ones_(module.gru_rel_pos_const)
        elif module is not self:
            self.model._init_weights(module)

    @property
    def normalize(self) -> bool:
        return bool(self.config.normalize_input)

    @property
    def family(self) -> str:
        return self.config.base_model_type

    @property
    def num_output_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        return hf_encode(self.model, wav, lengths, upto_layer=upto_layer, normalize=self.normalize,
                         batched_cnn=self.batched_cnn)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        return self.encode(wav, lengths, upto_layer)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:  # type: ignore[override]
        super().save_pretrained(str(save_directory), **kwargs)
        save_feature_extractor(save_directory, self.normalize, self.model.config.feat_extract_norm == "layer")


def pruned_config_from(
    base_config: PreTrainedConfig | dict[str, Any],
    family: str,
    kept_heads: list[list[int]],
    intermediate_sizes: list[int],
    conv_dims: list[int] | None = None,
    normalize_input: bool = False,
    prune_method: str | None = None,
    keep_macs: float | None = None,
    source_model: str | None = None,
) -> PrunedEncoderConfig:
    base = base_config if isinstance(base_config, dict) else base_config_dict(base_config)
    cfg = PrunedEncoderConfig(
        base_model_type=family,
        base_config=base,
        num_heads=[len(k) for k in kept_heads],
        kept_heads=[[int(h) for h in k] for k in kept_heads],
        intermediate_sizes=[int(n) for n in intermediate_sizes],
        conv_dims=None if conv_dims is None else [int(c) for c in conv_dims],
        normalize_input=bool(normalize_input),
        prune_method=prune_method,
        keep_macs=None if keep_macs is None else float(keep_macs),
        source_model=source_model,
    )
    cfg.validate_shapes()
    return cfg
