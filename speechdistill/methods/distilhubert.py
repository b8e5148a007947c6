"""DistilHuBERT (REFERENCE §2): teacher CNN + 2 teacher-initialised layers + per-target prediction heads.

The student's encoder is a stock HF ``HubertModel``/``WavLMModel`` so ``AutoModel.from_pretrained``
loads it; the heads (training-only) are stored beside it in ``prediction_heads.safetensors``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from speechdistill.data.batch import Batch
from speechdistill.methods.base import DistillMethod
from speechdistill.methods.losses import GradScale
from speechdistill.models.encoder import EncoderOutput, HFEncoder
from speechdistill.models.hf import FAMILIES, family_of
from speechdistill.models.teacher import Teacher
from speechdistill.utils.io import atomic_save_safetensors, atomic_write_json, load_safetensors, read_json

log = logging.getLogger(__name__)

HEADS_FILE = "prediction_heads.safetensors"
INFO_FILE = "distill_info.json"


@dataclass
class DistilHuBERTConfig:
    student_layers: int = 2
    # The paper and released checkpoint use 4, 8, 12 (s3prl's committed config says [4, 12]).
    targets: list[int] = field(default_factory=lambda: [4, 8, 12])
    init_from_teacher: bool = True
    cnn_grad_scale: float = 0.1
    freeze_cnn: bool = False
    cos_weight: float = 1.0
    # Start from an existing encoder directory instead of slicing the teacher: e.g. a STAT-pruned
    # teacher (`speechdistill prune`), which then recovers by layer distillation (the student's
    # layers and widths are whatever that directory holds).
    student_init: str = ""

    def validate(self) -> None:
        if self.student_layers < 1:
            raise ValueError("distilhubert.student_layers must be >= 1")
        if not self.targets:
            raise ValueError("distilhubert.targets must name at least one teacher layer")


class DistilHuBERTStudent(nn.Module):
    def __init__(self, encoder: HFEncoder, teacher_hidden: int, targets: list[int], cnn_grad_scale: float = 1.0):
        super().__init__()
        self.encoder = encoder
        self.targets = list(targets)
        self.heads = nn.ModuleList(nn.Linear(encoder.hidden_size, teacher_hidden) for _ in targets)
        if cnn_grad_scale != 1.0:
            encoder.model.feature_extractor.register_forward_hook(
                lambda _m, _i, out: GradScale.apply(out, cnn_grad_scale)
            )

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[EncoderOutput, list[torch.Tensor]]:
        out = self.encoder.encode(wav, lengths)
        last = out.hidden_states[-1]
        return out, [head(last) for head in self.heads]

    def save_pretrained(self, out_dir: Path, info: dict | None = None) -> None:
        out_dir = Path(out_dir)
        self.encoder.save_pretrained(out_dir)
        atomic_save_safetensors(out_dir / HEADS_FILE, {k: v for k, v in self.heads.state_dict().items()})
        atomic_write_json(out_dir / INFO_FILE, {"method": "distilhubert", "targets": self.targets, **(info or {})})


def build_student(teacher: Teacher, cfg: DistilHuBERTConfig, front_end=None) -> DistilHuBERTStudent:
    """``front_end``: a ``methods.frontend.FrontEnd`` (a cheaper front end initialised from the teacher's)."""
    if cfg.student_init:
        return _student_from_dir(teacher, cfg)
    t_model = teacher.encoder.model if isinstance(teacher.encoder, HFEncoder) else None
    if t_model is None:
        raise TypeError("DistilHuBERT needs a stock HF teacher (HuBERT/WavLM/wav2vec2) to copy its front end")
    if cfg.student_layers > teacher.num_layers and cfg.init_from_teacher:
        raise ValueError(f"student_layers={cfg.student_layers} > teacher layers {teacher.num_layers}")
    s_config = copy.deepcopy(t_model.config)
    s_config.num_hidden_layers = cfg.student_layers
    s_config.layerdrop = 0.0
    _, model_cls = FAMILIES[family_of(s_config)]
    model = model_cls(s_config)
    if cfg.init_from_teacher:
        t_state = t_model.state_dict()
        s_keys = set(model.state_dict())
        missing = sorted(s_keys - set(t_state))
        if missing:
            raise RuntimeError(f"cannot initialise the student from the teacher: missing {missing[:5]}")
        model.load_state_dict({k: t_state[k] for k in s_keys})
    if front_end is not None:  # issue 19: cheaper front end (methods/frontend.py)
        front_end.apply(model)
    if cfg.freeze_cnn:
        model.feature_extractor.requires_grad_(False)
    if front_end is not None:
        encoder = front_end.wrap(model, teacher.encoder.normalize)
    else:
        encoder = HFEncoder(model, normalize=teacher.encoder.normalize)
    return DistilHuBERTStudent(encoder, teacher.hidden_size, cfg.targets, cfg.cnn_grad_scale)


def _student_from_dir(teacher: Teacher, cfg: DistilHuBERTConfig) -> DistilHuBERTStudent:
    from speechdistill.models.load import load_encoder

    encoder = load_encoder(cfg.student_init)
    if not hasattr(getattr(encoder, "model", None), "feature_extractor"):
        raise ValueError(
            f"distilhubert.student_init={cfg.student_init}: a {type(encoder).__name__} cannot be a DistilHuBERT "
            "student (use a HuBERT/WavLM/wav2vec2 or pruned encoder directory)"
        )
    cfg_layerdrop = getattr(encoder.config, "layerdrop", None)
    if cfg_layerdrop:
        encoder.config.layerdrop = 0.0
    if cfg.freeze_cnn:
        encoder.model.feature_extractor.requires_grad_(False)
    encoder.train()
    return DistilHuBERTStudent(encoder, teacher.hidden_size, cfg.targets, cfg.cnn_grad_scale)


def load_student(path: str | Path) -> DistilHuBERTStudent:
    """Reload a saved DistilHuBERT student with its prediction heads (to continue distilling)."""
    from speechdistill.models.load import load_encoder

    path = Path(path)
    encoder = load_encoder(path)
    info = read_json(path / INFO_FILE)
    heads = load_safetensors(path / HEADS_FILE)
    student = DistilHuBERTStudent(encoder, heads["0.weight"].shape[0], info["targets"])
    student.heads.load_state_dict(heads)
    return student


class DistilHuBERTMethod(DistillMethod):
    name = "distilhubert"

    def __init__(self, teacher: Teacher, cfg: DistilHuBERTConfig, info: dict | None = None):
        super().__init__(teacher, cfg.targets, cfg.cos_weight)
        self.cfg = cfg
        self.info = info or {}

    def build_model(self) -> nn.Module:
        return build_student(self.teacher, self.cfg, self.front_end)

    def student_predictions(self, model, batch: Batch, teacher_layers, step):
        out, preds = model(batch.wav, batch.lengths)
        return preds, out.frame_lengths, out.hidden_states[0]

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(out_dir, info={"teacher": self.teacher.source, **self.info})
