"""Shared machinery of layer-distillation methods: teacher targets, loss, validation, param groups."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from speechdistill.data.batch import Batch
from speechdistill.methods.losses import multi_layer_loss
from speechdistill.methods.speed import SpeedConfig
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

    def __init__(self, teacher: Teacher, targets: list[int], cos_weight: float = 1.0):
        bad = [t for t in targets if not 1 <= t <= teacher.num_layers]
        if bad:
            raise ValueError(f"target layers {bad} out of range: the teacher has layers 1..{teacher.num_layers}")
        if list(targets) != sorted(set(targets)):
            raise ValueError(f"target layers must be increasing and unique, got {targets}")
        self.teacher = teacher
        self.targets = list(targets)
        self.cos_weight = cos_weight
        # How the step runs (teacher precision/kernels, 2-D attention, target cache); run.distill sets it.
        self.speed = SpeedConfig()
        self.cache = None  # a methods.teacher_cache.TeacherTargetCache once ``setup`` made one

    def setup(self, device: torch.device, rank: int = 0) -> None:
        from speechdistill.models.teacher_forward import configure_teacher

        sp = self.speed
        # Weights stay fp32 until ``prepare_model``: the student copies its initial weights from them.
        self.teacher_settings = configure_teacher(
            self.teacher, device, sp.teacher_dtype, sp.teacher_attention, sp.teacher_batched_cnn, cast=False
        )
        if sp.teacher_cache_dir:
            from speechdistill.methods.teacher_cache import TeacherTargetCache, teacher_fingerprint

            fp = teacher_fingerprint(self.teacher, self.targets, self.teacher_settings["dtype"])
            self.cache = TeacherTargetCache(sp.teacher_cache_dir, fp, self.teacher.config, rank)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Called by the engine once the student is built (the ``train.compile`` hook): the teacher takes
        its runtime dtype, the student its attention implementations."""
        from speechdistill.models.block_attention import set_grid_attention

        settings = getattr(self, "teacher_settings", None)  # set by ``setup``
        if settings is not None:
            self.teacher.to(getattr(torch, settings["dtype"]))
        for m in model.modules():
            cfg = getattr(m, "config", None)
            # A copied teacher config may ask for FlashAttention-2, which needs half-precision inputs; the
            # student keeps fp32 weights, and SDPA picks its own flash kernel under bf16 autocast.
            if getattr(cfg, "_attn_implementation", None) == "flash_attention_2" and hasattr(m, "set_attn_implementation"):
                m.set_attn_implementation("sdpa")
        set_grid_attention(model, "steps" if self.speed.grid_attention == "auto" else self.speed.grid_attention)
        return model

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return default_param_groups(model, lr, weight_decay)

    def teacher_targets(self, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """fp32 teacher layers ``targets`` [B, T, D] each, frame lengths and the frame mask.  The teacher
        stops at the deepest target layer."""
        from speechdistill.models.frames import config_output_lengths, frame_mask

        if self.cache is not None:
            cached = self.cache.get(batch)
            if cached is not None:
                lengths = config_output_lengths(self.teacher.config, batch.lengths).long()
                return cached, lengths, frame_mask(lengths, cached[0].shape[1])
        out = self.teacher(batch.wav, batch.lengths, upto_layer=max(self.targets))
        # The teacher runs under inference_mode; autograd cannot save inference tensors for backward (the
        # cosine loss and GenDistiller's history both need them), so take fp32 copies out here.
        targets = [out.hidden_states[t].to(torch.float32, copy=True) for t in self.targets]
        lengths = out.frame_lengths.clone()
        if self.cache is not None:
            self.cache.put(batch, targets, lengths)
        return targets, lengths, frame_mask(lengths, targets[0].shape[1])

    def student_predictions(
        self, model: nn.Module, batch: Batch, teacher_layers: list[torch.Tensor], step: int
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        targets, t_lengths, mask = self.teacher_targets(batch)
        preds, s_lengths = self.student_predictions(model, batch, targets, step)
        if not torch.equal(t_lengths.cpu(), s_lengths.cpu()):
            raise RuntimeError(
                f"student and teacher frame counts differ ({s_lengths.tolist()} vs {t_lengths.tolist()}): "
                "their CNN front ends must have the same strides and kernels"
            )
        return multi_layer_loss(preds, targets, self.targets, mask, self.cos_weight)

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
