"""GenDistiller method: teacher-forced (or scheduled-sampling) training of the generative student."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from speechdistill.data.batch import Batch
from speechdistill.methods.base import DistillMethod
from speechdistill.methods.losses import GradScale, multi_layer_loss
from speechdistill.models.gendistiller import GenDistillerModel
from speechdistill.models.teacher import Teacher
from speechdistill.utils.io import atomic_write_json


@dataclass
class GenDistillerMethodConfig:
    targets: list[int] = field(default_factory=lambda: [4, 8, 12])
    decoder_hidden_size: int = 0  # 0: the teacher's width
    decoder_layers: int = 1
    decoder_heads: int = 12
    decoder_ffn_dim: int = 2048
    mask: Literal["full", "previous", "axial"] = "full"
    skip: bool = True
    output_projection: bool = True
    layer_embedding: bool = True
    dropout: float = 0.1
    init_from_teacher: bool = True
    cnn_grad_scale: float = 0.1
    freeze_cnn: bool = False
    cos_weight: float = 1.0
    # Probability that a history step uses the student's own (detached) prediction instead of the
    # teacher's layer; ramps linearly from 0 to this value over training (0 = pure teacher forcing).
    scheduled_sampling: float = 0.0
    # Dev loss computed from free-running generation (what inference sees) instead of teacher forcing.
    validate_free_running: bool = True


class GenDistillerTrainer(nn.Module):
    """Training view of the student: DDP must see the forward that produces the loss, and the
    student's own ``forward`` is inference (free-running generation)."""

    def __init__(self, student: GenDistillerModel):
        super().__init__()
        self.student = student

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, teacher_layers: torch.Tensor, sampling_prob: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0, frame_lengths = self.student.front_end(wav, lengths)
        preds = self.student.forward_train(x0, teacher_layers, frame_lengths, sampling_prob)
        return preds, frame_lengths, x0


class GenDistillerMethod(DistillMethod):
    name = "gendistiller"

    def __init__(self, teacher: Teacher, cfg: GenDistillerMethodConfig, info: dict | None = None,
                 total_steps: int = 1):
        super().__init__(teacher, cfg.targets, cfg.cos_weight)
        self.cfg = cfg
        self.info = info or {}
        self.total_steps = total_steps

    def student_kwargs(self) -> dict:
        c = self.cfg
        kw = {
            "target_layers": list(c.targets), "decoder_layers": c.decoder_layers, "decoder_heads": c.decoder_heads,
            "decoder_ffn_dim": c.decoder_ffn_dim, "mask": c.mask, "skip": c.skip, "output_projection": c.output_projection,
            "layer_embedding": c.layer_embedding, "dropout": c.dropout,
        }
        if c.decoder_hidden_size:
            kw["decoder_hidden_size"] = c.decoder_hidden_size
        return kw

    def build_model(self) -> nn.Module:
        student = GenDistillerModel.from_teacher(self.teacher, **self.student_kwargs())
        if self.front_end is not None:  # issue 19: cheaper front end (methods/frontend.py)
            self.front_end.apply_gendistiller(student)
        if not self.cfg.init_from_teacher:
            student.frontend.apply(student._init_weights)
        if self.cfg.freeze_cnn:
            student.frontend.feature_extractor.requires_grad_(False)
        elif self.cfg.cnn_grad_scale != 1.0:
            scale = self.cfg.cnn_grad_scale
            student.frontend.feature_extractor.register_forward_hook(lambda _m, _i, out: GradScale.apply(out, scale))
        return GenDistillerTrainer(student)

    def sampling_prob(self, step: int) -> float:
        if step < 0 or self.cfg.scheduled_sampling <= 0:
            return 0.0
        return self.cfg.scheduled_sampling * min(1.0, step / max(1, self.total_steps))

    def student_predictions(self, model, batch: Batch, teacher_layers, step):
        preds, frame_lengths, x0 = model(batch.wav, batch.lengths, torch.stack(teacher_layers, 1), self.sampling_prob(step))
        return list(preds.unbind(1)), frame_lengths, x0

    def compute_loss_eval(self, model: nn.Module, batch: Batch):
        if not self.cfg.validate_free_running:
            return super().compute_loss_eval(model, batch)
        # What inference sees: generation from the student's own outputs, no teacher.
        targets, _, mask = self.teacher_targets(batch)
        out = model.student.encode(batch.wav, batch.lengths)
        return multi_layer_loss(list(out.hidden_states[1:]), targets, self.targets, mask, self.cos_weight)

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        student = model.student
        student.config.teacher_source = self.teacher.source
        student.save_pretrained(str(out_dir))
        atomic_write_json(Path(out_dir) / "distill_info.json", {"method": "gendistiller", **self.info})
