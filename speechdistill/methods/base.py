"""Shared machinery of layer-distillation methods: teacher targets, loss, validation, param groups."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from speechdistill.data.batch import Batch
from speechdistill.methods.losses import multi_layer_loss
from speechdistill.models.encoder import EncoderOutput
from speechdistill.models.teacher import Teacher


def default_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and embeddings (standard transformer practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name or "embed" in name else decay).append(p)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return groups


class DistillMethod:
    """Base for methods that regress teacher layers ``targets`` with the DistilHuBERT loss."""

    name = "distill"
    best_metric = None  # the final student is kept; dev metrics are logged
    # A cheaper student front end (methods.frontend.FrontEnd), set by run.distill.build_method; None keeps
    # the teacher's.  Its loss needs the student's hidden_states[0]: ``student_predictions`` then returns
    # it as a third element.
    front_end = None

    def __init__(self, teacher: Teacher, targets: list[int], cos_weight: float = 1.0):
        bad = [t for t in targets if not 1 <= t <= teacher.num_layers]
        if bad:
            raise ValueError(f"target layers {bad} out of range: the teacher has layers 1..{teacher.num_layers}")
        if list(targets) != sorted(set(targets)):
            raise ValueError(f"target layers must be increasing and unique, got {targets}")
        self.teacher = teacher
        self.targets = list(targets)
        self.cos_weight = cos_weight

    def setup(self, device: torch.device) -> None:
        self.teacher.to(device)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return default_param_groups(model, lr, weight_decay)

    def teacher_output(self, batch: Batch) -> EncoderOutput:
        return self.teacher(batch.wav, batch.lengths, upto_layer=max(self.targets))

    def teacher_targets(self, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        out = self.teacher_output(batch)
        return [out.hidden_states[t] for t in self.targets], out.frame_lengths, out.frame_mask

    def student_predictions(
        self, model: nn.Module, batch: Batch, teacher_layers: list[torch.Tensor], step: int
    ) -> tuple[list[torch.Tensor], torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Predictions of the target layers and frame lengths (plus the student's hidden_states[0], which
        the front-end loss needs)."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        t_out = self.teacher_output(batch)
        targets, t_lengths, mask = [t_out.hidden_states[t] for t in self.targets], t_out.frame_lengths, t_out.frame_mask
        preds, s_lengths, *rest = self.student_predictions(model, batch, targets, step)
        if not torch.equal(t_lengths.cpu(), s_lengths.cpu()):
            raise RuntimeError(
                f"student and teacher frame counts differ ({s_lengths.tolist()} vs {t_lengths.tolist()}): "
                "their CNN front ends must have the same strides and kernels"
            )
        loss, metrics = multi_layer_loss(preds, targets, self.targets, mask, self.cos_weight)
        if self.front_end is not None and self.front_end.trains:
            if not rest:
                raise RuntimeError(f"{self.name}: the front-end loss needs the student's hidden_states[0] from "
                                   "student_predictions")
            fe_loss, fe_metrics = self.front_end.loss(rest[0], t_out.hidden_states[0], mask, self.cos_weight)
            loss = loss + fe_loss
            metrics.update(fe_metrics)
        return loss, metrics

    @torch.no_grad()
    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        sums: dict[str, float] = defaultdict(float)
        weight = 0.0
        for batch in batches:
            loss, metrics = self.compute_loss_eval(model, batch)
            frames = float(self.teacher_frames(batch))
            sums["dev_loss"] += float(loss) * frames
            for k, v in metrics.items():
                sums[f"dev_{k}"] += v * frames
            weight += frames
        return {k: v / max(weight, 1.0) for k, v in sums.items()}

    def compute_loss_eval(self, model: nn.Module, batch: Batch):
        """Validation loss: by default the training loss (methods with a free-running mode override)."""
        return self.compute_loss(model, batch, step=-1)

    def teacher_frames(self, batch: Batch) -> int:
        from speechdistill.models.frames import config_output_lengths

        return int(config_output_lengths(self.teacher.config, batch.lengths).sum())
