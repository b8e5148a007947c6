"""Shared machinery of layer-distillation methods: teacher targets, loss, validation, param groups,
and the student's model card."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from speechdistill.data.batch import Batch
from speechdistill.methods.losses import multi_layer_loss
from speechdistill.methods.speed import SpeedConfig
from speechdistill.models.teacher import Teacher
from speechdistill.utils.io import atomic_write_text


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

            fp = teacher_fingerprint(self.teacher, self.fetched_layers(), self.teacher_settings["dtype"])
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
        layers, lengths, mask = self.teacher_layers(batch)
        return layers[len(layers) - len(self.targets):], lengths, mask

    def fetched_layers(self) -> list[int]:
        """Teacher layers taken per batch: the targets, plus the CNN output (hidden state 0) when a cheaper
        front end trains against it."""
        front = [0] if self.front_end is not None and self.front_end.trains else []
        return front + list(self.targets)

    def teacher_layers(self, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """fp32 copies of ``fetched_layers()``, frame lengths and mask; through the target cache if any."""
        from speechdistill.models.frames import config_output_lengths, frame_mask

        if self.cache is not None:
            cached = self.cache.get(batch)
            if cached is not None:
                lengths = config_output_lengths(self.teacher.config, batch.lengths).long()
                return cached, lengths, frame_mask(lengths, cached[0].shape[1])
        out = self.teacher(batch.wav, batch.lengths, upto_layer=max(self.targets))
        # The teacher runs under inference_mode; autograd cannot save inference tensors for backward (the
        # cosine loss and GenDistiller's history both need them), so take fp32 copies out here.
        layers = [out.hidden_states[t].to(torch.float32, copy=True) for t in self.fetched_layers()]
        lengths = out.frame_lengths.clone()
        if self.cache is not None:
            self.cache.put(batch, layers, lengths)
        return layers, lengths, frame_mask(lengths, layers[0].shape[1])

    def student_predictions(
        self, model: nn.Module, batch: Batch, teacher_layers: list[torch.Tensor], step: int
    ) -> tuple[list[torch.Tensor], torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Predictions of the target layers and frame lengths (plus the student's hidden_states[0], which
        the front-end loss needs)."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        layers, t_lengths, mask = self.teacher_layers(batch)
        targets = layers[len(layers) - len(self.targets):]
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
            fe_loss, fe_metrics = self.front_end.loss(rest[0], layers[0], mask, self.cos_weight)
            loss = loss + fe_loss
            metrics.update(fe_metrics)
        return loss, metrics

    @torch.no_grad()
    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        """Frame-weighted means over the dev set of the loss (``dev_loss``) and of every metric
        ``compute_loss_eval`` reports (``dev_<name>``)."""
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
        """Validation loss and metrics: by default the training loss.  Methods whose training pass
        differs from inference (generation chains) override it so that ``dev_loss`` is what inference
        sees."""
        return self.compute_loss(model, batch, step=-1)

    def teacher_frames(self, batch: Batch) -> int:
        from speechdistill.models.frames import config_output_lengths

        return int(config_output_lengths(self.teacher.config, batch.lengths).sum())


def write_model_card(out_dir: Path, info: dict) -> None:
    """README.md beside a saved student: method, teacher, targets, initialisation and sizes."""
    params = info.get("parameters", {})
    lines = [
        f"# {info.get('method', 'student')} student (speechdistill)",
        "",
        f"- teacher: `{info.get('teacher', '?')}`",
        f"- target teacher layers: {info.get('targets', '?')}",
    ]
    if params:
        lines.append(f"- parameters: encoder {params.get('encoder', 0):,}"
                     + (f", prediction heads {params['heads']:,} (training only)" if params.get("heads") else ""))
    init = info.get("initialisation")
    if init:
        lines.append("- initialisation: " + ", ".join(f"{k} = {v}" for k, v in init.items()))
    training = info.get("training")
    if training:
        lines.append("- training: " + ", ".join(f"{k} = {v}" for k, v in training.items()))
    lines += ["", "Full record: `distill_info.json`.", "", "```json",
              json.dumps({k: v for k, v in info.items() if k != "recipe"}, indent=2, default=str), "```", ""]
    atomic_write_text(Path(out_dir) / "README.md", "\n".join(lines))
