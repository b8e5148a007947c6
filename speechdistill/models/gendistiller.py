"""GenDistiller student: a teacher front end plus a small decoder that generates teacher layers one by one.

Design (GenDistiller, arXiv 2310.13418 / 2406.09444; what the papers leave open is a config field here):

- Front end = the teacher family's HF base model with ``num_hidden_layers=0`` (CNN, feature
  projection, positional conv, encoder LayerNorm); ``x0 = hf_encode(...).hidden_states[0]``.  For a
  post-LN teacher (HuBERT/WavLM Base) this is the teacher's hidden_states[0] computed by the student's
  front end; for a stable-LN teacher (Large) the 0-layer encoder applies its final LayerNorm, so
  x0 = LN(teacher hidden_states[0]).  HuBERT-family front ends drop the LayerNorm before the feature
  projection by default, like DistilHuBERT's published student (see ``models.frontend``).
- History grid H[:, k] (k = 0..K-1): H0 = x0, Hk = ĥk (inference) or the teacher's layer
  target_layers[k-1] (teacher forcing).  The decoder (``decoder_layers`` blocks, weights shared by
  every step) runs over all (k, t) tokens under a 2-D mask (see ``attention2d``); its output at
  step k-1 gives  ĥk = H[k-1] + W_out · Dec(H)[k-1]  (``skip`` and ``output_projection`` switchable).
  ĥk is trained to match teacher layer target_layers[k-1].  Under teacher forcing the skip base
  H[k-1] is therefore the teacher's layer, at inference the model's own ĥk-1: one formula, so the
  parallel pass equals a step-by-step pass over the same history (tested).
- Blocks are pre-LN (``block_norm="pre"``, then a final LayerNorm before W_out) or post-LN
  (``"post"``: HuBERT Base's own layer layout, no final LayerNorm), so that a teacher layer can be
  copied in exactly (``init_decoder_from_teacher``).  ``first_step_block`` gives step 1 (ĥ1 from x0
  alone) blocks of its own; later steps share ``blocks``.
- Width: histories live in teacher width; ``in_proj`` maps to the decoder width and ``W_out`` back
  when they differ.  If the front end is narrower than the teacher (a custom ``frontend_config``),
  ``x0_proj`` maps x0 to teacher width and hidden_states[0] is that PROJECTED x0, so every returned
  hidden state has the same width (weighted-sum downstreams need that).
- Training passes (``forward_train``; which one a recipe uses is the method's ``training_mode``):
  teacher forcing is one parallel pass; with ``sampling_prob`` p > 0 each history token k >= 1 is,
  with probability p, the model's own prediction ĥk instead of the teacher's layer (drawn per
  (utterance, step), or per utterance with ``scheduled_sampling="utterance"``).  p > 0 runs step by
  step with the KV cache (the same token computations as the parallel pass, so FLOPs match), and
  p = 1 is exactly the inference-time free-running pass.  The model's own history keeps its gradient
  (unrolled: a later step's loss trains the earlier steps that produced its history) unless
  ``detach=True``; ``bptt_steps=N`` detaches every N-th generated history token (truncated backprop).
- Padded frames are zeroed in every returned hidden state and never attended.
- Entry points: ``encode``/``forward(wav, lengths)`` for inference (EncoderOutput);
  ``forward(wav, lengths, teacher_layers=..., sampling_prob=...)`` for training
  (``GenDistillerTrainOutput``), so DDP wrappers see the call.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from speechdistill.models.attention2d import BLOCK_NORMS, MASK_KINDS, DecoderBlock, KVCache
from speechdistill.models.encoder import EncoderOutput, hf_encode, hf_model_of
from speechdistill.models.frames import frame_mask
from speechdistill.models.frontend import (
    frontend_state_from_teacher,
    has_feature_norm_switch,
    set_pos_conv_kernel,
)
from speechdistill.models.size import count_parameters

log = logging.getLogger(__name__)

SAMPLING_GRANULARITIES = ("step", "utterance")
DECODER_INITS = ("random", "teacher")

# Keys of a teacher family config that describe transformer layers or training-time masking: the
# 0-layer front end drops the layers and never masks (``hf_encode`` bypasses SpecAugment anyway).
_FRONTEND_OVERRIDES: dict[str, Any] = {
    "num_hidden_layers": 0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
}

__all__ = ["GenDistillerConfig", "GenDistillerModel", "count_parameters", "frontend_config_dict"]


def _family_classes(family: str):
    from speechdistill.models.hf import FAMILIES

    if family not in FAMILIES:
        raise ValueError(f"frontend_family {family!r} is not supported (supported: {', '.join(FAMILIES)})")
    return FAMILIES[family]


def frontend_config_dict(teacher_config: PretrainedConfig, feat_proj_layer_norm: bool = False) -> dict[str, Any]:
    """The teacher's HF config as a plain dict, reduced to a 0-layer front end; HuBERT front ends drop
    the feature-projection LayerNorm unless ``feat_proj_layer_norm`` (see ``models.frontend``)."""
    d = teacher_config.to_dict()
    for k in ("architectures", "_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        d.pop(k, None)
    d.update(_FRONTEND_OVERRIDES)
    if has_feature_norm_switch(teacher_config):
        d["feat_proj_layer_norm"] = bool(feat_proj_layer_norm)
    return d


def default_target_layers(num_teacher_layers: int, num_targets: int = 3) -> list[int]:
    """Evenly spaced teacher layers ending at the last one: 12 layers -> [4, 8, 12]."""
    out = sorted({max(1, round(num_teacher_layers * i / num_targets)) for i in range(1, num_targets + 1)})
    return out


class GenDistillerConfig(PretrainedConfig):
    """Config of the GenDistiller student (see the module doc for what each switch does)."""

    model_type = "gendistiller"
    # Downstream code reads ``config.hidden_size``: the output width is the teacher's.
    attribute_map: ClassVar[dict[str, str]] = {"hidden_size": "teacher_hidden_size"}

    frontend_config: dict | None = None  # teacher family HF config dict, num_hidden_layers=0
    frontend_family: str = "hubert"  # hubert | wavlm | wav2vec2
    normalize_input: bool = False  # zero-mean/unit-var waveforms (layer-norm CNN teachers)
    teacher_hidden_size: int = 768
    teacher_num_layers: int = 12
    target_layers: list[int] | None = None  # teacher layer indices; None -> [4, 8, 12]
    decoder_hidden_size: int = 768
    decoder_layers: int = 1  # blocks; the same blocks run at every generation step
    decoder_heads: int = 12
    decoder_ffn_dim: int = 2048
    block_norm: str = "pre"  # pre | post (post = HuBERT Base's layer layout, copies a teacher layer exactly)
    first_step_block: bool = False  # step 1 (ĥ1 from x0) gets decoder_layers blocks of its own
    dropout: float = 0.1
    attention_dropout: float = 0.0
    mask: str = "full"  # full | previous | axial
    skip: bool = True  # ĥk = ĥk-1 + W_out·Dec(...)k
    output_projection: bool = True  # W_out (required when decoder and teacher widths differ)
    layer_embedding: bool = True  # learned embedding of the step index k
    scheduled_sampling: str = "step"  # step | utterance: granularity of the forward_train draw
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    teacher_source: str = ""
    # How the decoder was initialised (a record for the model card; weights come from the checkpoint).
    decoder_init: str = "random"  # random | teacher
    decoder_init_layers: list[int] | None = None  # teacher layer copied into each shared block
    first_step_init_layers: list[int] | None = None  # ... into each first-step block

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.target_layers is None:
            self.target_layers = [4, 8, 12]
        self.target_layers = [int(x) for x in self.target_layers]
        if self.frontend_config is None:
            # The product default: a HuBERT-Base-shaped front end (random until from_teacher/load).
            cfg_cls, _ = _family_classes(self.frontend_family)
            self.frontend_config = frontend_config_dict(cfg_cls())
        self.validate_gendistiller()

    def validate_gendistiller(self) -> None:
        problems = []
        tl = self.target_layers
        if not tl:
            problems.append("target_layers is empty")
        elif any(b <= a for a, b in pairwise(tl)) or tl[0] < 1:
            problems.append(f"target_layers {tl} must be strictly increasing teacher layer indices >= 1")
        elif tl[-1] > self.teacher_num_layers:
            problems.append(f"target_layers {tl} exceed the teacher's {self.teacher_num_layers} layers")
        if self.mask not in MASK_KINDS:
            problems.append(f"mask {self.mask!r} is not one of {', '.join(MASK_KINDS)}")
        if self.block_norm not in BLOCK_NORMS:
            problems.append(f"block_norm {self.block_norm!r} is not one of {', '.join(BLOCK_NORMS)}")
        if self.decoder_init not in DECODER_INITS:
            problems.append(f"decoder_init {self.decoder_init!r} is not one of {', '.join(DECODER_INITS)}")
        if self.scheduled_sampling not in SAMPLING_GRANULARITIES:
            problems.append(f"scheduled_sampling {self.scheduled_sampling!r} is not one of "
                            f"{', '.join(SAMPLING_GRANULARITIES)}")
        if self.decoder_hidden_size % self.decoder_heads:
            problems.append(f"decoder_hidden_size {self.decoder_hidden_size} is not divisible by "
                            f"decoder_heads {self.decoder_heads}")
        if not self.output_projection and self.decoder_hidden_size != self.teacher_hidden_size:
            problems.append("output_projection=False needs decoder_hidden_size == teacher_hidden_size "
                            f"({self.decoder_hidden_size} != {self.teacher_hidden_size})")
        if self.decoder_layers < 1:
            problems.append("decoder_layers must be >= 1")
        _family_classes(self.frontend_family)
        if problems:
            raise ValueError("invalid GenDistillerConfig: " + "; ".join(problems))

    @property
    def num_steps(self) -> int:
        return len(self.target_layers)

    def build_frontend_config(self) -> PretrainedConfig:
        cfg_cls, _ = _family_classes(self.frontend_family)
        d = dict(self.frontend_config or {})
        d.pop("model_type", None)
        d.update(_FRONTEND_OVERRIDES)
        return cfg_cls(**d)


@dataclass
class GenDistillerTrainOutput:
    predictions: torch.Tensor  # [B, K, T, D_teacher]: ĥ1..ĥK, compare with teacher layers target_layers
    frame_lengths: torch.Tensor  # [B]
    x0: torch.Tensor  # [B, T, D_teacher] front-end output

    @property
    def frame_mask(self) -> torch.Tensor:
        return frame_mask(self.frame_lengths, self.predictions.shape[2])


def _unwrap_teacher(teacher: nn.Module) -> tuple[str, bool | None, nn.Module]:
    """(source, input normalisation or None, bare HF model) of a ``Teacher``, ``HFEncoder`` or HF model."""
    from speechdistill.models.teacher import unwrap_teacher

    try:
        hf_model = hf_model_of(teacher)
    except TypeError:
        raise TypeError(
            f"a GenDistiller needs a HuBERT/WavLM/wav2vec2 teacher (Teacher, HFEncoder or HF model), got "
            f"{type(teacher).__name__}"
        ) from None
    return getattr(teacher, "source", ""), getattr(unwrap_teacher(teacher), "normalize", None), hf_model


class GenDistillerModel(PreTrainedModel):
    """The student.  Encoder interface: ``encode(wav, lengths, upto_layer) -> EncoderOutput`` with
    hidden_states (x0, ĥ1, ..., ĥK); ``num_output_layers`` = K; ``hidden_size`` = teacher width."""

    config_class = GenDistillerConfig
    base_model_prefix = "gendistiller"
    main_input_name = "input_values"

    def __init__(self, config: GenDistillerConfig):
        super().__init__(config)
        fe_cfg = config.build_frontend_config()
        _, fe_cls = _family_classes(config.frontend_family)
        self.frontend = fe_cls(fe_cfg)
        Dt, Dd = config.teacher_hidden_size, config.decoder_hidden_size
        self.x0_proj = nn.Linear(fe_cfg.hidden_size, Dt) if fe_cfg.hidden_size != Dt else None
        self.in_proj = nn.Linear(Dt, Dd) if Dt != Dd else None
        self.layer_embed = nn.Embedding(config.num_steps, Dd) if config.layer_embedding else None
        self.input_dropout = nn.Dropout(config.dropout)

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                DecoderBlock(Dd, config.decoder_heads, config.decoder_ffn_dim, config.mask, config.dropout,
                             config.attention_dropout, config.layer_norm_eps, config.block_norm)
                for _ in range(config.decoder_layers)
            )

        self.blocks = stack()
        self.first_blocks = stack() if config.first_step_block else None
        # Post-LN blocks already end in a LayerNorm.
        self.final_norm = nn.LayerNorm(Dd, eps=config.layer_norm_eps) if config.block_norm == "pre" else None
        self.out_proj = nn.Linear(Dd, Dt) if config.output_projection else None
        self.batched_cnn = False  # models.protocol.Encoder: the traceable CNN for ONNX export
        self.post_init()

    # ----------------------------------------------------------------------------------- interface
    @property
    def num_output_layers(self) -> int:
        return self.config.num_steps

    @property
    def hidden_size(self) -> int:
        return self.config.teacher_hidden_size

    @property
    def target_layers(self) -> list[int]:
        return list(self.config.target_layers)

    @property
    def normalize(self) -> bool:
        return bool(self.config.normalize_input)

    def front_end(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 [B, T, D_teacher] (padded frames zero) and frame lengths [B]."""
        out = hf_encode(self.frontend, wav, lengths, normalize=self.normalize, batched_cnn=self.batched_cnn)
        x0 = out.hidden_states[0]
        if self.x0_proj is not None:
            x0 = self.x0_proj(x0)
        valid = frame_mask(out.frame_lengths, x0.shape[1])
        return torch.where(valid[..., None], x0, x0.new_zeros(())), out.frame_lengths

    def encode(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        """Hidden states (x0, ĥ1, ..., ĥj) with j = ``upto_layer`` (default K); ĥj mimics teacher layer
        target_layers[j-1].  Generates from its own outputs (no teacher), with the KV cache."""
        K = self.config.num_steps
        steps = K if upto_layer is None else int(upto_layer)
        if not 0 <= steps <= K:
            raise ValueError(f"upto_layer={upto_layer} but the GenDistiller student generates {K} layers")
        x0, frame_lengths = self.front_end(wav, lengths)
        preds = self.generate(x0, frame_lengths, num_steps=steps, use_cache=True)
        states = (x0, *preds.unbind(1)) if steps else (x0,)
        return EncoderOutput(tuple(states), frame_lengths, states[-1] if steps == K else None)

    def forward(
        self,
        input_values: torch.Tensor,
        lengths: torch.Tensor | None = None,
        upto_layer: int | None = None,
        teacher_layers: torch.Tensor | None = None,
        sampling_prob: float = 0.0,
        generator: torch.Generator | None = None,
        detach: bool = False,
        bptt_steps: int = 0,
    ) -> EncoderOutput | GenDistillerTrainOutput:
        """Without ``teacher_layers``: ``encode`` (inference).  With them [B, K, T, Dt]: the training pass
        (front end + ``forward_train``).  Training goes through ``forward`` so that a DDP/accelerate
        wrapper sees the call (calling ``model.module.forward_train`` would bypass its gradient sync)."""
        if teacher_layers is None:
            return self.encode(input_values, lengths, upto_layer)
        x0, frame_lengths = self.front_end(input_values, lengths)
        preds = self.forward_train(x0, teacher_layers, frame_lengths, sampling_prob, generator, detach, bptt_steps)
        return GenDistillerTrainOutput(preds, frame_lengths, x0)

    # ------------------------------------------------------------------------------------ decoder
    def _embed(self, history: torch.Tensor, step0: int, valid: torch.Tensor) -> torch.Tensor:
        """History [B, S, T, Dt] at steps [step0, step0+S) -> decoder inputs [B, S, T, Dd]."""
        # where(), not a product: 0 x NaN/inf padding would stay NaN
        h = torch.where(valid[:, None, :, None], history, history.new_zeros(()))
        x = self.in_proj(h) if self.in_proj is not None else h
        if self.layer_embed is not None:
            x = x + self.layer_embed.weight[step0 : step0 + history.shape[1]][None, :, None, :]
        return self.input_dropout(x)

    def _decode(self, history: torch.Tensor, step0: int, valid: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """Predictions ĥ for steps step0+1 .. step0+S from history steps step0 .. step0+S-1 (the cache, if
        given, must hold steps 0..step0-1)."""
        x = self._embed(history, step0, valid)
        y = x
        for i, block in enumerate(self.blocks):
            y = block(y, step0, valid, cache, i)
        if self.first_blocks is not None and step0 == 0:
            # Step 1 reads x0 alone through its own blocks (no cache: nothing precedes step 0).
            y0 = x[:, :1]
            for block in self.first_blocks:
                y0 = block(y0, 0, valid, None, 0)
            y = torch.cat([y0, y[:, 1:]], dim=1)
        if self.final_norm is not None:
            y = self.final_norm(y)
        if self.out_proj is not None:
            y = self.out_proj(y)
        if self.config.skip:
            y = history + y
        if cache is not None:
            cache.num_steps = step0 + history.shape[1]
        return torch.where(valid[:, None, :, None], y, y.new_zeros(()))

    def forward_teacher_forced(
        self, x0: torch.Tensor, teacher_layers: torch.Tensor, frame_lengths: torch.Tensor
    ) -> torch.Tensor:
        """All K predictions [B, K, T, Dt] in one parallel pass; history = x0 and teacher layers 1..K-1.

        ``teacher_layers`` [B, K, T, Dt] are the teacher's hidden states at ``target_layers`` (the
        targets; the last one is not needed as history and is ignored here)."""
        self._check_teacher_layers(x0, teacher_layers)
        K = self.config.num_steps
        valid = frame_mask(frame_lengths, x0.shape[1])
        history = torch.cat([x0[:, None], teacher_layers[:, : K - 1].to(x0.dtype)], dim=1)
        return self._decode(history, 0, valid, None)

    def forward_stepwise(
        self,
        x0: torch.Tensor,
        frame_lengths: torch.Tensor,
        teacher_layers: torch.Tensor | None = None,
        use_own: torch.Tensor | None = None,
        num_steps: int | None = None,
        use_cache: bool = True,
        detach_own: bool = False,
        bptt_steps: int = 0,
    ) -> torch.Tensor:
        """Step-by-step pass.  History token k >= 1 is the model's own ĥk where ``use_own[b, k-1]`` is
        True (all True if ``teacher_layers`` is None), else ``teacher_layers[b, k-1]``.

        The model's own ĥk enters the history detached if ``detach_own`` or (``bptt_steps`` = N > 0) if k
        is a multiple of N, else with its gradient.  ``use_cache=False`` re-runs the decoder over the
        whole history at each step (reference path)."""
        K = self.config.num_steps if num_steps is None else num_steps
        valid = frame_mask(frame_lengths, x0.shape[1])
        if teacher_layers is not None:
            self._check_teacher_layers(x0, teacher_layers)
            if use_own is None:
                use_own = torch.zeros(x0.shape[0], self.config.num_steps, dtype=torch.bool, device=x0.device)
        cache = KVCache.empty(len(self.blocks)) if use_cache else None
        history: list[torch.Tensor] = []
        preds: list[torch.Tensor] = []
        h = x0
        for k in range(K):
            if k > 0:
                cut = detach_own or (bptt_steps > 0 and k % bptt_steps == 0)
                own = preds[-1].detach() if cut else preds[-1]
                if teacher_layers is None:
                    h = own
                else:
                    pick = use_own[:, k - 1].view(-1, 1, 1)
                    h = torch.where(pick, own, teacher_layers[:, k - 1].to(own.dtype))
            if cache is not None:
                y = self._decode(h[:, None], k, valid, cache)[:, 0]
            else:
                history.append(h)
                y = self._decode(torch.stack(history, 1), 0, valid, None)[:, -1]
            preds.append(y)
        if not preds:
            return x0.new_zeros(x0.shape[0], 0, *x0.shape[1:])
        return torch.stack(preds, 1)

    def generate(
        self, x0: torch.Tensor, frame_lengths: torch.Tensor, num_steps: int | None = None, use_cache: bool = True
    ) -> torch.Tensor:
        """Inference: ĥ1..ĥK [B, K, T, Dt] generated from the model's own outputs (no teacher)."""
        return self.forward_stepwise(x0, frame_lengths, None, None, num_steps, use_cache)

    def forward_train(
        self,
        x0: torch.Tensor,
        teacher_layers: torch.Tensor,
        frame_lengths: torch.Tensor,
        sampling_prob: float = 0.0,
        generator: torch.Generator | None = None,
        detach: bool = False,
        bptt_steps: int = 0,
    ) -> torch.Tensor:
        """Training predictions [B, K, T, Dt].

        Each history token k >= 1 is, with probability ``sampling_prob``, the model's own prediction
        instead of the teacher layer; drawn per (utterance, step) or per utterance
        (``config.scheduled_sampling``).  p = 0 -> one parallel teacher-forced pass; p > 0 -> the
        step-by-step cached pass (p = 1 equals free-running inference).  The own predictions keep their
        gradient (unrolled) unless ``detach``; ``bptt_steps`` truncates (see ``forward_stepwise``)."""
        if not 0.0 <= sampling_prob <= 1.0:
            raise ValueError(f"sampling_prob must be in [0, 1], got {sampling_prob}")
        if sampling_prob == 0.0:
            return self.forward_teacher_forced(x0, teacher_layers, frame_lengths)
        B, K = x0.shape[0], self.config.num_steps
        if sampling_prob == 1.0:
            use_own = torch.ones(B, K, dtype=torch.bool, device=x0.device)
        else:
            draws = 1 if self.config.scheduled_sampling == "utterance" else K
            u = torch.rand(B, draws, generator=generator, device="cpu" if generator is None else generator.device)
            use_own = (u.to(x0.device) < sampling_prob).expand(B, K)
        return self.forward_stepwise(x0, frame_lengths, teacher_layers, use_own, use_cache=True,
                                     detach_own=detach, bptt_steps=bptt_steps)

    def _check_teacher_layers(self, x0: torch.Tensor, teacher_layers: torch.Tensor) -> None:
        B, T, D = x0.shape
        K = self.config.num_steps
        if teacher_layers.dim() != 4 or teacher_layers.shape[0] != B or teacher_layers.shape[2] != T \
                or teacher_layers.shape[3] != D or teacher_layers.shape[1] < K:
            raise ValueError(
                f"teacher_layers must be [B={B}, K={K}, T={T}, D={D}] (teacher layers {self.target_layers}), "
                f"got {list(teacher_layers.shape)}"
            )

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_teacher(cls, teacher_encoder: nn.Module, feat_proj_layer_norm: bool = False, pos_conv_kernel: int = 0,
                     **cfg_kwargs: Any) -> GenDistillerModel:
        """A student whose front end is a copy of the teacher's (CNN, projection, pos conv, encoder LN;
        HuBERT front ends without the feature LayerNorm unless ``feat_proj_layer_norm``; a positional
        conv of ``pos_conv_kernel`` taps, the teacher's centre taps, if given).

        ``teacher_encoder``: a ``Teacher``, an ``HFEncoder`` or an HF HuBERT/WavLM/wav2vec2 model.
        Unset decoder sizes follow the teacher: width and heads = the teacher's, FFN = 2/3 of the
        teacher's FFN (3072 -> 2048), targets = evenly spaced ending at the last layer ([4, 8, 12]).
        The decoder starts random; ``init_decoder_from_teacher`` copies teacher layers into it."""
        from speechdistill.models.hf import family_of

        source, normalize, hf_model = _unwrap_teacher(teacher_encoder)
        tcfg = hf_model.config
        if normalize is None:
            normalize = getattr(tcfg, "feat_extract_norm", "group") == "layer"
        fe_cfg = copy.deepcopy(tcfg)
        set_pos_conv_kernel(fe_cfg, pos_conv_kernel)
        kw: dict[str, Any] = {
            "frontend_config": frontend_config_dict(fe_cfg, feat_proj_layer_norm),
            "frontend_family": family_of(tcfg),
            "normalize_input": normalize,
            "teacher_hidden_size": tcfg.hidden_size,
            "teacher_num_layers": tcfg.num_hidden_layers,
            "target_layers": default_target_layers(tcfg.num_hidden_layers),
            "decoder_hidden_size": tcfg.hidden_size,
            "decoder_heads": tcfg.num_attention_heads,
            "decoder_ffn_dim": max(1, round(tcfg.intermediate_size * 2 / 3)),
            "teacher_source": source or str(getattr(tcfg, "_name_or_path", "") or ""),
        }
        kw.update(cfg_kwargs)
        model = cls(GenDistillerConfig(**kw))
        model.copy_frontend_from(hf_model)
        return model

    def copy_frontend_from(self, teacher_model: nn.Module) -> None:
        """Load the teacher's front-end weights; every front-end key must exist with the same shape."""
        src = hf_model_of(teacher_model).state_dict()
        dst = self.frontend.state_dict()
        try:
            state = frontend_state_from_teacher(src, dst)
        except ValueError as e:
            raise ValueError(f"teacher front end does not match the student's: {e}") from None
        self.frontend.load_state_dict(state, strict=True)
        log.info("copied %d front-end tensors from the teacher", len(dst))

    def init_decoder_from_teacher(
        self, teacher_model: nn.Module, layers: Sequence[int] | None = None,
        first_step_layers: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Copy teacher layers (1-based) into the decoder blocks: ``layers[i]`` into shared block i
        (default 1..decoder_layers), ``first_step_layers[i]`` into first-step block i (same default).

        The layer embedding is zeroed so that step 1 sees x0 itself: with post-LN blocks, no skip and
        no output projection, ĥ1 is then exactly the copied teacher layer applied to x0.  Returns the
        record stored in the config and the student's info file."""
        t_layers = _unwrap_teacher(teacher_model)[2].encoder.layers
        n = self.config.decoder_layers

        def resolve(spec: Sequence[int] | None, what: str) -> list[int]:
            chosen = list(spec) if spec else list(range(1, n + 1))
            if len(chosen) != n or not all(1 <= t <= len(t_layers) for t in chosen):
                raise ValueError(f"{what} {chosen}: need {n} teacher layer indices in 1..{len(t_layers)} "
                                 f"(one per decoder block)")
            return chosen

        shared = resolve(layers, "decoder_init_layers")
        record: dict[str, Any] = {"decoder_init": "teacher", "decoder_init_layers": shared}
        for block, t in zip(self.blocks, shared):
            record.update(block.load_teacher_layer(t_layers[t - 1]))
        if self.first_blocks is not None:
            first = resolve(first_step_layers, "first_step_init_layers")
            for block, t in zip(self.first_blocks, first):
                block.load_teacher_layer(t_layers[t - 1])
            record["first_step_init_layers"] = first
        if self.layer_embed is not None:
            with torch.no_grad():
                self.layer_embed.weight.zero_()
        for key in ("decoder_init", "decoder_init_layers", "first_step_init_layers"):
            if key in record:
                setattr(self.config, key, record[key])
        log.info("decoder initialised from teacher layers %s", record)
        return record


def decoder_parameter_names(model: GenDistillerModel) -> Sequence[str]:
    """Names of the parameters outside the front end (for per-group learning rates)."""
    return [n for n, _ in model.named_parameters() if not n.startswith("frontend.")]
