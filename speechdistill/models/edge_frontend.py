"""Cheaper student front ends: a thin CNN, a cheaper positional conv, a lower frame rate inside the student.

Why: at HuBERT Base shape the CNN, feature projection and positional conv cost 27 of the teacher's 74
GMACs per 10 s and about half of its CPU time, so a student that keeps them (DistilHuBERT, GenDistiller)
cannot be much more than 2x faster however few layers it has (bench/RESULTS.md, issue 19).

``FrontEndConfig`` describes the cut; every switch at its default keeps the teacher's front end.

- ``conv_channels``: every CNN layer gets this many channels.  ``conv_dim`` is a HubertConfig key, so the
  student stays a stock ``HubertModel``/``WavLMModel`` that plain transformers loads.
- ``pos_conv_groups`` / ``pos_conv_kernel``: the positional conv's groups and taps (HubertConfig keys
  ``num_conv_pos_embedding_groups`` / ``num_conv_pos_embeddings``); groups = hidden size is a depthwise conv.
- ``frame_rate_reduction``: the student's CNN runs its last layer at ``factor`` times the stride (a 25 Hz
  body for factor 2) and ``ReducedRateEncoder`` interpolates every hidden state back to the teacher's
  frame rate for the loss and the outputs.  HubertConfig can express the strided CNN but not the
  upsampling, so such a student is a project model type (``reduced_rate_encoder``), not a stock one.

This module only reshapes models (``reshape_front_end``) and wraps them; initialising the new front end
from the teacher needs calibration statistics and lives in ``prune.frontend``; the front-end loss and the
glue for the distillation methods live in ``methods.frontend``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from speechdistill.models.encoder import EncoderOutput, hf_encode, hf_model_of, save_feature_extractor
from speechdistill.models.frames import conv_output_lengths, frame_mask

log = logging.getLogger(__name__)

REDUCED_RATE_MODEL_TYPE = "reduced_rate_encoder"
UPSAMPLE_MODES = ("linear", "repeat")
_DROP_KEYS = ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype")


@dataclass
class FrontEndConfig:
    """A cheaper front end for a student; 0 / 1 everywhere = the teacher's front end, unchanged."""

    # Channels of every CNN layer (0 = the teacher's; 128 cuts HuBERT Base's CNN MACs about 15x).
    conv_channels: int = 0
    # "id": channels chosen by interpolative decomposition on calibration audio, with the next layer
    # corrected (the STAT machinery, prune.frontend); "random": fresh weights (ablation).
    conv_init: Literal["id", "random"] = "id"
    # Positional conv taps and groups (0 = the teacher's: 128 taps, 16 groups at Base shape).
    # groups = hidden size (768 at Base) is a depthwise conv: 48x fewer MACs than 16 groups.
    pos_conv_kernel: int = 0
    pos_conv_groups: int = 0
    # "fit": least squares on calibration audio so the new conv reproduces the teacher's positional
    # embedding; "restrict": the teacher's weights restricted to the new groups and central taps.
    pos_conv_init: Literal["fit", "restrict", "random"] = "fit"
    # The transformer body runs at 1/factor of the teacher's frame rate (2: 25 Hz for HuBERT); outputs
    # are interpolated back to the teacher's frames.  Not a stock HF model then (see module doc).
    frame_rate_reduction: int = 1
    upsample: Literal["linear", "repeat"] = "linear"
    # Weight of the front-end loss (L1 + cosine on the teacher's hidden_states[0], DistilHuBERT's layer
    # loss) added during distillation when the front end differs from the teacher's; 0 = off.
    loss_weight: float = 1.0
    # Calibration audio for conv_init=id and pos_conv_init=fit (empty: the distillation's training manifest).
    calib_manifest: str = ""
    num_calib: int = 64
    calib_max_seconds: float = 6.0

    def validate(self) -> None:
        for name in ("conv_channels", "pos_conv_kernel", "pos_conv_groups"):
            if getattr(self, name) < 0:
                raise ValueError(f"frontend.{name} must be >= 0 (0 = the teacher's), got {getattr(self, name)}")
        if self.frame_rate_reduction < 1:
            raise ValueError(f"frontend.frame_rate_reduction must be >= 1, got {self.frame_rate_reduction}")
        if self.loss_weight < 0:
            raise ValueError(f"frontend.loss_weight must be >= 0, got {self.loss_weight}")
        if self.num_calib < 1 or self.calib_max_seconds <= 0:
            raise ValueError("frontend.num_calib must be >= 1 and frontend.calib_max_seconds > 0")

    @property
    def changes_front_end(self) -> bool:
        return bool(self.conv_channels or self.pos_conv_kernel or self.pos_conv_groups or self.frame_rate_reduction > 1)

    @property
    def needs_calibration(self) -> bool:
        return (bool(self.conv_channels) and self.conv_init == "id") or (
            self.changes_pos_conv and self.pos_conv_init == "fit"
        )

    @property
    def changes_pos_conv(self) -> bool:
        return bool(self.pos_conv_kernel or self.pos_conv_groups)


def front_end_overrides(config: PretrainedConfig, fe: FrontEndConfig) -> dict[str, Any]:
    """The HF config keys ``fe`` changes (``conv_dim``, positional conv, last conv layer's stride)."""
    out: dict[str, Any] = {}
    n = len(config.conv_dim)
    if fe.conv_channels:
        out["conv_dim"] = [int(fe.conv_channels)] * n
    hidden = int(config.hidden_size)
    if fe.pos_conv_kernel:
        out["num_conv_pos_embeddings"] = int(fe.pos_conv_kernel)
    if fe.pos_conv_groups:
        if hidden % fe.pos_conv_groups:
            raise ValueError(
                f"frontend.pos_conv_groups={fe.pos_conv_groups} does not divide the hidden size {hidden} "
                f"(use {hidden} for a depthwise conv)"
            )
        out["num_conv_pos_embedding_groups"] = int(fe.pos_conv_groups)
    if fe.frame_rate_reduction > 1:
        k, s = int(config.conv_kernel[-1]), int(config.conv_stride[-1])
        if k != s:
            raise ValueError(
                f"frontend.frame_rate_reduction needs a last conv layer with kernel == stride (HuBERT/WavLM: 2, 2); "
                f"this CNN's is kernel {k}, stride {s}"
            )
        f = int(fe.frame_rate_reduction)
        out["conv_kernel"] = [*map(int, config.conv_kernel[:-1]), k * f]
        out["conv_stride"] = [*map(int, config.conv_stride[:-1]), s * f]
    return out


def _same_device(new: nn.Module, old: nn.Module) -> nn.Module:
    ref = next(old.parameters(), None)
    return new if ref is None else new.to(ref.device, ref.dtype)


def reshape_front_end(model: nn.Module, overrides: dict[str, Any]) -> list[str]:
    """Rebuild the CNN, feature projection and/or positional conv of an HF HuBERT/WavLM/wav2vec 2.0 model in
    place with the new shapes (fresh weights), and write ``overrides`` into its config so it saves and
    reloads with them.  Returns the names of the rebuilt modules."""
    hf = hf_model_of(model)
    cfg = hf.config
    for k, v in overrides.items():
        setattr(cfg, k, tuple(v) if isinstance(v, list) else v)
    rebuilt = []
    cnn_keys = {"conv_dim", "conv_kernel", "conv_stride"}
    if cnn_keys & set(overrides):
        hf.feature_extractor = _same_device(type(hf.feature_extractor)(cfg), hf.feature_extractor)
        rebuilt.append("feature_extractor")
    if "conv_dim" in overrides:
        hf.feature_projection = _same_device(type(hf.feature_projection)(cfg), hf.feature_projection)
        rebuilt.append("feature_projection")
    if {"num_conv_pos_embeddings", "num_conv_pos_embedding_groups"} & set(overrides):
        old = hf.encoder.pos_conv_embed
        hf.encoder.pos_conv_embed = _same_device(type(old)(cfg), old)
        rebuilt.append("encoder.pos_conv_embed")
    for name in rebuilt:
        module = hf.get_submodule(name)
        for m in module.modules():
            hf._init_weights(m)
    return rebuilt


# ---------------------------------------------------------------------------------------------
# Positional conv weights (weight-normed in HF: weight = g * v / ||v||, norm over all but the tap axis)


def pos_conv_weight(pos_conv_embed: nn.Module) -> torch.Tensor:
    """The effective positional conv weight [D, D/groups, K]."""
    return pos_conv_embed.conv.weight.detach()


def set_pos_conv_weight(pos_conv_embed: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Set the effective weight of a (weight-normed) positional conv so that ``conv.weight == weight``."""
    conv = pos_conv_embed.conv
    weight = weight.to(conv.weight.dtype)
    with torch.no_grad():
        param = getattr(conv, "parametrizations", None)
        if param is not None and "weight" in param:
            g = weight.norm(dim=(0, 1), keepdim=True)
            param.weight.original0.copy_(g)
            param.weight.original1.copy_(weight)
        elif hasattr(conv, "weight_g"):  # legacy nn.utils.weight_norm
            conv.weight_g.copy_(weight.norm(dim=(0, 1), keepdim=True))
            conv.weight_v.copy_(weight)
        else:
            conv.weight.copy_(weight)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias.to(conv.bias.dtype))


# ---------------------------------------------------------------------------------------------
# Frame-rate reduction


def upsample_plan(
    lengths: torch.Tensor, out_frames: int | torch.Tensor, factor: int, mode: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Where each output frame reads the body: (low index [B, T_out], high index, weight of high or None).

    Output frame t sits at body position (t + 0.5) / factor - 0.5 (frame centres: body frame j covers
    output frames j*factor .. j*factor+factor-1).  ``linear`` blends the two nearest body frames,
    ``repeat`` takes the nearest; positions past an utterance's last body frame reuse it, so an output
    frame never reads padding.  Broadcasting and tensor sizes only, so an ONNX trace keeps batch and time
    dynamic.
    """
    t = torch.arange(out_frames, device=device).to(torch.float32)[None, :]  # [1, T_out]
    last = (lengths.to(device).clamp(min=1) - 1).to(torch.float32)[:, None]  # [B, 1]
    if mode == "repeat":
        idx = torch.minimum(torch.floor(t / factor), last).long()
        return idx, idx, None
    pos = torch.minimum(((t + 0.5) / factor - 0.5).clamp(min=0.0), last)
    lo = torch.floor(pos)
    return lo.long(), torch.minimum(lo + 1, last).long(), (pos - lo)[..., None]


def apply_upsample(x: torch.Tensor, plan, out_lengths: torch.Tensor) -> torch.Tensor:
    """[B, T', D] -> [B, T_out, D] by ``upsample_plan``; padded output frames are zero."""
    lo, hi, w = plan
    d = x.shape[-1]
    y = torch.gather(x, 1, lo[..., None].expand(-1, -1, d))
    if w is not None:
        w = w.to(x.dtype)
        y = y * (1 - w) + torch.gather(x, 1, hi[..., None].expand(-1, -1, d)) * w
    valid = frame_mask(out_lengths.to(x.device), y.shape[1])
    return torch.where(valid[..., None], y, y.new_zeros(()))


def upsample_frames(
    x: torch.Tensor, lengths: torch.Tensor, out_lengths: torch.Tensor, out_frames: int | torch.Tensor, factor: int,
    mode: str,
) -> torch.Tensor:
    """[B, T', D] at 1/factor of the output rate -> [B, out_frames, D] (see ``upsample_plan``)."""
    return apply_upsample(x, upsample_plan(lengths, out_frames, factor, mode, x.device), out_lengths)


class ReducedRateEncoderConfig(PretrainedConfig):
    """Config of ``ReducedRateEncoder``: the body's HF config plus the output frame geometry.

    ``conv_kernel`` / ``conv_stride`` are the OUTPUT geometry (the teacher's CNN), so
    ``config_output_lengths(encoder.config, ...)`` gives the output frame count everywhere; the body's own
    (strided) CNN is in ``base_config``.  Other attributes read through to ``base_config``.
    """

    model_type = REDUCED_RATE_MODEL_TYPE

    base_model_type: str = "hubert"
    base_config: dict[str, Any] | None = None
    factor: int = 2
    upsample: str = "linear"
    conv_kernel: list[int] | None = None
    conv_stride: list[int] | None = None
    normalize_input: bool = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        base = self.__dict__.get("base_config")
        if base is not None and name in base:
            value = base[name]
            return tuple(value) if isinstance(value, list) else value
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def build_base_config(self) -> PretrainedConfig:
        from speechdistill.models.hf import FAMILIES

        if self.base_model_type not in FAMILIES:
            raise ValueError(f"reduced-rate encoder: base_model_type {self.base_model_type!r} is not one of "
                             f"{', '.join(FAMILIES)}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"reduced-rate encoder: upsample {self.upsample!r} is not one of {', '.join(UPSAMPLE_MODES)}")
        cfg_cls, _ = FAMILIES[self.base_model_type]
        return cfg_cls(**{k: v for k, v in (self.base_config or {}).items() if k not in (*_DROP_KEYS, "model_type")})


class ReducedRateEncoder(PreTrainedModel):
    """A HuBERT/WavLM/wav2vec 2.0 body whose CNN runs at 1/factor of the teacher's frame rate, with every
    hidden state interpolated back to the teacher's frames (project encoder contract)."""

    config_class = ReducedRateEncoderConfig
    main_input_name = "input_values"

    def __init__(self, config: ReducedRateEncoderConfig):
        super().__init__(config)
        from speechdistill.models.hf import FAMILIES

        _, model_cls = FAMILIES[config.base_model_type]
        self.model = model_cls(config.build_base_config())
        self.batched_cnn = False  # models.protocol.Encoder
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is not self:
            self.model._init_weights(module)

    @classmethod
    def wrap(
        cls, model: nn.Module, factor: int, upsample: str, output_kernel, output_stride, normalize: bool
    ) -> ReducedRateEncoder:
        """Wrap an existing HF model (its CNN already strided by ``factor``), sharing its weights."""
        from speechdistill.models.hf import family_of

        hf = hf_model_of(model)
        base = {k: v for k, v in hf.config.to_dict().items() if k not in _DROP_KEYS}
        cfg = ReducedRateEncoderConfig(
            base_model_type=family_of(hf.config), base_config=base, factor=int(factor), upsample=upsample,
            conv_kernel=[int(k) for k in output_kernel], conv_stride=[int(s) for s in output_stride],
            normalize_input=bool(normalize),
        )
        enc = cls(cfg)
        enc.model = hf  # the same modules (requires_grad flags, hooks) as the model passed in
        return enc

    @property
    def normalize(self) -> bool:
        return bool(self.config.normalize_input)

    @property
    def num_output_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def output_lengths(self, lengths: torch.Tensor | int):
        return conv_output_lengths(lengths, self.config.conv_kernel, self.config.conv_stride)

    def encode(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
        body = hf_encode(self.model, wav, lengths, upto_layer=upto_layer, normalize=self.normalize,
                         batched_cnn=self.batched_cnn)
        out_lengths = self.output_lengths(lengths.to(wav.device)).long()
        # The longest utterance's frames (a tensor, not a Python int: the ONNX trace keeps time dynamic); only
        # a batch padded past its longest utterance gets fewer padding frames than the teacher would.
        out_frames = out_lengths.max()
        plan = upsample_plan(body.frame_lengths, out_frames, int(self.config.factor), self.config.upsample, wav.device)
        states = tuple(apply_upsample(h, plan, out_lengths) for h in body.hidden_states)
        last = body.last_hidden_state
        if last is not None:  # post-LN models: the last state itself, upsampled once
            last = states[-1] if last is body.hidden_states[-1] else apply_upsample(last, plan, out_lengths)
        return EncoderOutput(states, out_lengths, last)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        return self.encode(wav, lengths, upto_layer)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:  # type: ignore[override]
        # The body's config may have changed since wrapping (a reshaped front end): store the current one.
        self.config.base_config = {k: v for k, v in self.model.config.to_dict().items() if k not in _DROP_KEYS}
        super().save_pretrained(str(save_directory), **kwargs)
        save_feature_extractor(save_directory, self.normalize, self.model.config.feat_extract_norm == "layer")
