"""DistilHuBERT (Chang et al., arXiv 2110.01900; s3prl ``pretrain/distiller``): the teacher's front end
plus a few transformer layers, and prediction heads that regress several teacher layers at once.

Faithful to the reference recipe by default:

- Heads: ``head_type="expand-last"`` as s3prl's ``out_layer_type: expand-last``: one shared
  ``Linear(d, inter*K)``, GELU, then a per-target ``Linear(inter, d_teacher)`` on the target's slice,
  inter = d by default (3.54M parameters for K = 3 at d = 768).  ``"linear"`` (K plain
  ``Linear(d, d_teacher)``, no nonlinearity) is kept as a named variant for ablations.
- Loss: mean over target layers (``methods.losses``).
- Front end: HuBERT-family students drop the LayerNorm before the feature projection, like the
  published student (``feat_proj_layer_norm: false``); the projection is the teacher's, copied
  (``models.frontend`` says why not folded).  The student still loads with stock ``HubertModel``.
- Initialisation: front end and layers copied from the teacher (layers 1..N, or ``init_layers``);
  ``layer_init="random"`` keeps the teacher front end but starts the layers random.

Two deliberate differences from the reference runner, both ours-is-right: the teacher runs in eval
mode (s3prl leaves it in train mode, so its dropout makes the targets random), and audio is validated
and resampled on load (s3prl does neither).

The student's encoder is a stock HF ``HubertModel``/``WavLMModel`` so ``AutoModel.from_pretrained``
loads it; the heads (training-only) are stored beside it in ``prediction_heads.safetensors`` with their
layout in ``distill_info.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from speechdistill.data.batch import Batch
from speechdistill.methods.base import DistillMethod, write_model_card
from speechdistill.methods.losses import GradScale
from speechdistill.models.encoder import EncoderOutput, HFEncoder
from speechdistill.models.frontend import (
    frontend_state_from_teacher,
    has_feature_norm_switch,
    student_hf_config,
)
from speechdistill.models.hf import FAMILIES, family_of
from speechdistill.models.size import HEADS_FILE, student_parameters
from speechdistill.models.teacher import Teacher, disable_layerdrop
from speechdistill.utils.io import atomic_save_safetensors, atomic_write_json, load_safetensors, read_json

log = logging.getLogger(__name__)

INFO_FILE = "distill_info.json"
HEAD_TYPES = ("expand-last", "linear")


@dataclass
class DistilHuBERTConfig:
    student_layers: int = 2
    # The paper and released checkpoint use 4, 8, 12 (s3prl's committed config says [4, 12]).
    targets: list[int] = field(default_factory=lambda: [4, 8, 12])
    # s3prl's expand-last heads; "linear" = one plain Linear per target (ablation variant).
    head_type: Literal["expand-last", "linear"] = "expand-last"
    head_inter_dim: int = 0  # expand-last width per target; 0 = the student's width (s3prl default)
    # Front end (CNN, feature projection, positional conv) copied from the teacher.
    init_from_teacher: bool = True
    # Transformer layers: copies of teacher layers ``init_layers`` (default 1..student_layers) or random.
    layer_init: Literal["teacher", "random"] = "teacher"
    init_layers: list[int] = field(default_factory=list)
    # HuBERT-family students only: keep the LayerNorm before the feature projection (the published
    # DistilHuBERT has none).
    feat_proj_layer_norm: bool = False
    # Positional conv taps (0 = the teacher's); shorter ones start from the teacher kernel's centre taps.
    pos_conv_kernel: int = 0
    cnn_grad_scale: float = 0.1
    freeze_cnn: bool = False
    cos_weight: float = 1.0
    # Dropout of the student's layers (hidden, attention, activation); < 0 = the teacher config's (s3prl: 0.1).
    dropout: float = -1.0
    # Start from an existing encoder directory instead of slicing the teacher: e.g. a STAT-pruned
    # teacher (`speechdistill prune`), which then recovers by layer distillation (the student's
    # layers and widths are whatever that directory holds).
    student_init: str = ""

    def validate(self) -> None:
        if self.student_layers < 1:
            raise ValueError("distilhubert.student_layers must be >= 1")
        if not self.targets:
            raise ValueError("distilhubert.targets must name at least one teacher layer")
        if self.head_inter_dim < 0:
            raise ValueError("distilhubert.head_inter_dim must be >= 0 (0 = the student's width)")
        if self.init_layers and len(self.init_layers) != self.student_layers:
            raise ValueError(f"distilhubert.init_layers {self.init_layers} must name one teacher layer per "
                             f"student layer ({self.student_layers})")


class PredictionHeads(nn.Module):
    """K prediction heads on the last student layer (training only).

    ``"expand-last"`` (s3prl): y_k = W_k · GELU(W_e x + b_e)[k-th slice of ``inter``] + b_k;
    ``"linear"``: y_k = W_k x + b_k.  Both use nn.Linear's default init, which is the uniform
    (-1/sqrt(fan_in), 1/sqrt(fan_in)) that s3prl's SplitLinear draws."""

    def __init__(self, in_dim: int, out_dim: int, num_targets: int, kind: str = "expand-last", inter_dim: int = 0):
        super().__init__()
        if kind not in HEAD_TYPES:
            raise ValueError(f"unknown prediction head type {kind!r}; choose one of {', '.join(HEAD_TYPES)}")
        self.kind = kind
        self.inter_dim = (inter_dim or in_dim) if kind == "expand-last" else in_dim
        self.expand = nn.Linear(in_dim, self.inter_dim * num_targets) if kind == "expand-last" else None
        self.act = nn.GELU()
        self.out = nn.ModuleList(nn.Linear(self.inter_dim, out_dim) for _ in range(num_targets))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.expand is None:
            return [head(x) for head in self.out]
        h = self.act(self.expand(x)).split(self.inter_dim, dim=-1)
        return [head(part) for head, part in zip(self.out, h)]

    def layout(self) -> dict[str, Any]:
        return {"type": self.kind, "inter_dim": self.inter_dim, "num_targets": len(self.out)}


class DistilHuBERTStudent(nn.Module):
    def __init__(self, encoder: HFEncoder, heads: PredictionHeads, targets: list[int], cnn_grad_scale: float = 1.0):
        super().__init__()
        self.encoder = encoder
        self.targets = list(targets)
        self.prediction_heads = heads
        if cnn_grad_scale != 1.0:
            encoder.model.feature_extractor.register_forward_hook(
                lambda _m, _i, out: GradScale.apply(out, cnn_grad_scale)
            )

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[EncoderOutput, list[torch.Tensor]]:
        out = self.encoder.encode(wav, lengths)
        return out, self.prediction_heads(out.hidden_states[-1])

    def save_pretrained(self, out_dir: Path, info: dict | None = None) -> None:
        out_dir = Path(out_dir)
        self.encoder.save_pretrained(out_dir)
        atomic_save_safetensors(out_dir / HEADS_FILE, dict(self.prediction_heads.state_dict()))
        record = {"method": "distilhubert", "targets": self.targets, "heads": self.prediction_heads.layout(),
                  "parameters": student_parameters(self).as_dict(), **(info or {})}
        atomic_write_json(out_dir / INFO_FILE, record)
        write_model_card(out_dir, record)


def _heads_for(encoder: HFEncoder, teacher_hidden: int, cfg: DistilHuBERTConfig) -> PredictionHeads:
    return PredictionHeads(encoder.hidden_size, teacher_hidden, len(cfg.targets), cfg.head_type, cfg.head_inter_dim)


def build_student(
    teacher: Teacher, cfg: DistilHuBERTConfig, front_end=None
) -> tuple[DistilHuBERTStudent, dict[str, Any]]:
    """The student and a record of how it was initialised (for its info file and model card).

    ``front_end``: a ``methods.frontend.FrontEnd`` (a cheaper front end initialised from the teacher's)."""
    if cfg.student_init:
        return _student_from_dir(teacher, cfg), {"student_init": cfg.student_init}
    t_model = teacher.encoder.model if isinstance(teacher.encoder, HFEncoder) else None
    if t_model is None:
        raise TypeError("DistilHuBERT needs a stock HF teacher (HuBERT/WavLM/wav2vec2) to copy its front end")
    init_layers = list(cfg.init_layers) or list(range(1, cfg.student_layers + 1))
    if cfg.layer_init == "teacher" and max(init_layers) > teacher.num_layers:
        raise ValueError(f"distilhubert init layers {init_layers} exceed the teacher's {teacher.num_layers} layers")
    s_config = student_hf_config(t_model.config, cfg.student_layers, cfg.feat_proj_layer_norm, cfg.pos_conv_kernel)
    if cfg.dropout >= 0:
        for key in ("hidden_dropout", "attention_dropout", "activation_dropout"):
            setattr(s_config, key, cfg.dropout)
    _, model_cls = FAMILIES[family_of(s_config)]
    model = model_cls(s_config)
    t_state = t_model.state_dict()
    s_state = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    wanted: dict[str, str] = {}  # layer keys: student key -> teacher key
    if cfg.init_from_teacher:
        front = {k: v for k, v in s_state.items() if not k.startswith("encoder.layers.")}
        new.update(frontend_state_from_teacher(t_state, front))
    if cfg.layer_init == "teacher":
        for i, t in enumerate(init_layers):
            prefix, t_prefix = f"encoder.layers.{i}.", f"encoder.layers.{t - 1}."
            wanted.update({k: t_prefix + k[len(prefix):] for k in s_state if k.startswith(prefix)})
    bad = sorted(k for k, tk in wanted.items() if tk not in t_state or t_state[tk].shape != s_state[k].shape)
    if bad:
        raise RuntimeError(f"cannot initialise the student from the teacher: missing or mismatched {bad[:5]}")
    new.update({k: t_state[tk] for k, tk in wanted.items()})
    model.load_state_dict(new, strict=False)
    if front_end is not None:  # a cheaper front end (methods/frontend.py)
        if front_end.cfg.changes_front_end and has_feature_norm_switch(s_config) and not s_config.feat_proj_layer_norm:
            log.warning("frontend.* with distilhubert.feat_proj_layer_norm=false: the front-end fit assumes the "
                        "teacher's normalised features; set distilhubert.feat_proj_layer_norm=true (edge recipes do)")
        front_end.apply(model)
    if cfg.freeze_cnn:
        model.feature_extractor.requires_grad_(False)
    if front_end is not None:
        encoder = front_end.wrap(model, teacher.encoder.normalize)
    else:
        encoder = HFEncoder(model, normalize=teacher.encoder.normalize)
    record = {
        "front_end": "teacher" if cfg.init_from_teacher else "random",
        "feat_proj_layer_norm": bool(getattr(s_config, "feat_proj_layer_norm", True)),
        "feat_proj_init": ("teacher projection copied, its LayerNorm dropped"
                           if has_feature_norm_switch(s_config) and not s_config.feat_proj_layer_norm
                           and cfg.init_from_teacher else "as the front end"),
        "layers": f"teacher layers {init_layers}" if cfg.layer_init == "teacher" else "random",
    }
    if cfg.pos_conv_kernel:
        record["pos_conv"] = f"{cfg.pos_conv_kernel} taps" + (" (teacher centre taps)" if cfg.init_from_teacher else "")
    if front_end is not None:
        c = front_end.cfg
        record["front_end"] = (f"cheaper, from the teacher's: conv_channels={c.conv_channels or 'teacher'} "
                               f"({c.conv_init}), pos_conv {c.pos_conv_kernel or 'teacher'} taps / "
                               f"{c.pos_conv_groups or 'teacher'} groups ({c.pos_conv_init}), "
                               f"frame_rate_reduction={c.frame_rate_reduction}")
    return DistilHuBERTStudent(encoder, _heads_for(encoder, teacher.hidden_size, cfg), cfg.targets,
                               cfg.cnn_grad_scale), record


def _student_from_dir(teacher: Teacher, cfg: DistilHuBERTConfig) -> DistilHuBERTStudent:
    from speechdistill.models.load import load_encoder

    encoder = load_encoder(cfg.student_init)
    if not hasattr(getattr(encoder, "model", None), "feature_extractor"):
        raise ValueError(
            f"distilhubert.student_init={cfg.student_init}: a {type(encoder).__name__} cannot be a DistilHuBERT "
            "student (use a HuBERT/WavLM/wav2vec2 or pruned encoder directory)"
        )
    disable_layerdrop(encoder)
    if cfg.freeze_cnn:
        encoder.model.feature_extractor.requires_grad_(False)
    encoder.train()
    return DistilHuBERTStudent(encoder, _heads_for(encoder, teacher.hidden_size, cfg), cfg.targets, cfg.cnn_grad_scale)


def load_student(path: str | Path) -> DistilHuBERTStudent:
    """Reload a saved DistilHuBERT student with its prediction heads (to continue distilling)."""
    from speechdistill.models.load import load_encoder

    path = Path(path)
    encoder = load_encoder(path)
    info = read_json(path / INFO_FILE)
    state = load_safetensors(path / HEADS_FILE)
    layout = info.get("heads", {"type": "linear"})  # files written before the expand-last heads
    if "0.weight" in state:  # the old plain-linear layout: K Linear modules at the top level
        state = {f"out.{k}": v for k, v in state.items()}
    out_dim = state["out.0.weight"].shape[0]
    heads = PredictionHeads(encoder.hidden_size, out_dim, len(info["targets"]), layout["type"],
                            layout.get("inter_dim", 0))
    heads.load_state_dict(state)
    return DistilHuBERTStudent(encoder, heads, info["targets"])


class DistilHuBERTMethod(DistillMethod):
    name = "distilhubert"

    def __init__(self, teacher: Teacher, cfg: DistilHuBERTConfig, info: dict | None = None):
        super().__init__(teacher, cfg.targets, cfg.cos_weight)
        self.cfg = cfg
        self.info = info or {}
        self.init_record: dict[str, Any] = {}

    def build_model(self) -> nn.Module:
        student, self.init_record = build_student(self.teacher, self.cfg, self.front_end)
        log.info("DistilHuBERT student: %s; initialisation %s", student_parameters(student), self.init_record)
        return student

    def student_predictions(self, model, batch: Batch, teacher_layers, step):
        out, preds = model(batch.wav, batch.lengths)
        return preds, out.frame_lengths, out.hidden_states[0]

    # -- curriculum support (methods/curriculum.py): the student state at depth ``upto`` -------------
    def student_depth(self, model: nn.Module) -> int:
        return model.encoder.num_output_layers

    def student_width(self, model: nn.Module) -> int:
        return model.encoder.hidden_size

    def student_state(self, model: nn.Module, wav, lengths, upto: int):
        out = model.encoder.encode(wav, lengths, upto_layer=upto)
        return out.hidden_states[upto], out.frame_lengths

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(out_dir, info={"teacher": self.teacher.source, "initialisation": self.init_record,
                                             **self.info})
