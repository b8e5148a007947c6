"""GenDistiller method: the generative student trained to regress teacher layers, in one of three modes.

Training modes (``training_mode``) for the generation chain ĥ1 -> ĥ2 -> ... (inference always runs
free, on the student's own outputs):

- ``teacher_forced``: history = the teacher's layers, one parallel pass.  Cheapest, but the student
  never sees its own errors: exposure bias.
- ``free_running``: history = the student's own predictions, exactly as at inference, with gradients
  through the generated history (unrolled: a later step's loss also trains the steps that produced its
  history) unless ``detach_history``; ``bptt_steps = N`` detaches every N-th generated token
  (truncated backprop; 1 = fully detached).
- ``scheduled_sampling``: each history token is the student's own with probability p, ramped from
  ``sampling_start`` to ``sampling_end`` between the fractions ``ramp_start`` and ``ramp_end`` of
  training; detached or not as above.

Default ``free_running`` (unrolled): it trains what inference runs.  Measured at demo scale
(``bench/gendistiller_ablation.py``, dev set, see bench/RESULTS.md): teacher-forced training leaves a
gap between teacher-forced and free-running dev loss that free-running training closes, and keeping the
gradient through the chain beats detaching it.

Validation reports what inference sees: ``dev_loss`` and ``dev_{l1,cos,loss}_L<i>`` come from
free-running generation; the teacher-forced ones are labelled ``dev_tf_*``.
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
from speechdistill.methods.losses import GradScale, multi_layer_loss
from speechdistill.models.gendistiller import GenDistillerModel
from speechdistill.models.size import student_parameters
from speechdistill.models.teacher import Teacher
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

TRAINING_MODES = ("teacher_forced", "free_running", "scheduled_sampling")


@dataclass
class GenDistillerMethodConfig:
    targets: list[int] = field(default_factory=lambda: [4, 8, 12])
    decoder_hidden_size: int = 0  # 0: the teacher's width
    decoder_layers: int = 1
    decoder_heads: int = 12
    decoder_ffn_dim: int = 2048
    mask: Literal["full", "previous", "axial"] = "full"
    # "post": HuBERT Base's post-LN layer layout (a copied teacher layer is exact); "pre": pre-LN.
    block_norm: Literal["pre", "post"] = "pre"
    first_step_block: bool = False  # step 1 gets its own blocks (more parameters)
    skip: bool = True
    output_projection: bool = True
    layer_embedding: bool = True
    dropout: float = 0.1
    # Front end (CNN, projection, positional conv) copied from the teacher; HuBERT front ends drop the
    # feature-projection LayerNorm unless feat_proj_layer_norm (as DistilHuBERT's student).
    init_from_teacher: bool = True
    feat_proj_layer_norm: bool = False
    # Positional conv taps (0 = the teacher's); shorter ones start from the teacher kernel's centre taps.
    pos_conv_kernel: int = 0
    # Decoder blocks: random, or copies of teacher layers (one per block; default 1..decoder_layers).
    decoder_init: Literal["random", "teacher"] = "random"
    decoder_init_layers: list[int] = field(default_factory=list)
    first_step_init_layers: list[int] = field(default_factory=list)
    cnn_grad_scale: float = 0.1
    freeze_cnn: bool = False
    cos_weight: float = 1.0
    # How the generation chain is trained (module doc).
    training_mode: Literal["teacher_forced", "free_running", "scheduled_sampling"] = "free_running"
    detach_history: bool = False
    bptt_steps: int = 0
    sampling_start: float = 0.0
    sampling_end: float = 1.0
    ramp_start: float = 0.0
    ramp_end: float = 1.0
    sampling_granularity: Literal["step", "utterance"] = "step"
    # Also report teacher-forced dev metrics (dev_tf_*) beside the free-running ones.
    validate_teacher_forced: bool = True

    def validate(self) -> None:
        from speechdistill.config import check_ranges

        check_ranges("gendistiller", self, bptt_steps=">=0", sampling_start="[0,1]", sampling_end="[0,1]",
                     ramp_start="[0,1]", ramp_end="[0,1]", pos_conv_kernel=">=0",
                     hints={"bptt_steps": "0 = through the whole chain"})
        if self.ramp_end < self.ramp_start:
            raise ValueError(f"gendistiller.ramp_end ({self.ramp_end}) must be >= ramp_start ({self.ramp_start})")
        if self.decoder_init == "random" and (self.decoder_init_layers or self.first_step_init_layers):
            raise ValueError("gendistiller.decoder_init_layers / first_step_init_layers need decoder_init=teacher")


def sampling_probability(cfg: GenDistillerMethodConfig, step: int, total_steps: int) -> float:
    """Probability that a history token is the student's own at training step ``step`` (< 0: eval)."""
    if step < 0 or cfg.training_mode == "teacher_forced":
        return 0.0
    if cfg.training_mode == "free_running":
        return 1.0
    frac = step / max(1, total_steps)
    if frac <= cfg.ramp_start:
        return cfg.sampling_start
    if frac >= cfg.ramp_end:
        return cfg.sampling_end
    t = (frac - cfg.ramp_start) / (cfg.ramp_end - cfg.ramp_start)
    return cfg.sampling_start + t * (cfg.sampling_end - cfg.sampling_start)


class GenDistillerTrainer(nn.Module):
    """Training view of the student: DDP must see the forward that produces the loss, and the
    student's own ``forward`` is inference (free-running generation)."""

    def __init__(self, student: GenDistillerModel, detach: bool = False, bptt_steps: int = 0):
        super().__init__()
        self.student = student
        self.detach = detach
        self.bptt_steps = bptt_steps

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, teacher_layers: torch.Tensor, sampling_prob: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0, frame_lengths = self.student.front_end(wav, lengths)
        preds = self.student.forward_train(x0, teacher_layers, frame_lengths, sampling_prob,
                                           detach=self.detach, bptt_steps=self.bptt_steps)
        return preds, frame_lengths, x0


class GenDistillerMethod(DistillMethod):
    name = "gendistiller"

    def __init__(self, teacher: Teacher, cfg: GenDistillerMethodConfig, info: dict | None = None,
                 total_steps: int = 1):
        super().__init__(teacher, cfg.targets, cfg.cos_weight)
        self.cfg = cfg
        self.info = info or {}
        self.total_steps = total_steps
        self.init_record: dict[str, Any] = {}

    def student_kwargs(self) -> dict:
        c = self.cfg
        kw = {
            "target_layers": list(c.targets), "decoder_layers": c.decoder_layers, "decoder_heads": c.decoder_heads,
            "decoder_ffn_dim": c.decoder_ffn_dim, "mask": c.mask, "skip": c.skip, "output_projection": c.output_projection,
            "layer_embedding": c.layer_embedding, "dropout": c.dropout, "block_norm": c.block_norm,
            "first_step_block": c.first_step_block, "scheduled_sampling": c.sampling_granularity,
        }
        if c.decoder_hidden_size:
            kw["decoder_hidden_size"] = c.decoder_hidden_size
        return kw

    def build_model(self) -> nn.Module:
        c = self.cfg
        student = GenDistillerModel.from_teacher(self.teacher, feat_proj_layer_norm=c.feat_proj_layer_norm,
                                                 pos_conv_kernel=c.pos_conv_kernel, **self.student_kwargs())
        if self.front_end is not None:  # a cheaper front end (methods/frontend.py)
            self.front_end.apply_gendistiller(student)
        if not c.init_from_teacher:
            student.frontend.apply(student._init_weights)
        record: dict[str, Any] = {
            "front_end": "teacher" if c.init_from_teacher else "random",
            "feat_proj_layer_norm": bool(student.config.frontend_config.get("feat_proj_layer_norm", True)),
            "decoder": "random",
        }
        if c.pos_conv_kernel:
            record["pos_conv"] = f"{c.pos_conv_kernel} taps" + (" (teacher centre taps)" if c.init_from_teacher else "")
        if c.decoder_init == "teacher":
            t = student.init_decoder_from_teacher(self.teacher.encoder, c.decoder_init_layers or None,
                                                  c.first_step_init_layers or None)
            record["decoder"] = f"teacher layers {t['decoder_init_layers']}"
            if "first_step_init_layers" in t:
                record["first_step_block"] = f"teacher layers {t['first_step_init_layers']}"
            if t.get("ffn_neurons_kept", 0) < t.get("ffn_neurons_teacher", 0):
                record["ffn"] = f"{t['ffn_neurons_kept']} of the teacher's {t['ffn_neurons_teacher']} neurons (largest norms)"
        record["block_norm"] = c.block_norm
        self.init_record = record
        if c.freeze_cnn:
            student.frontend.feature_extractor.requires_grad_(False)
        elif c.cnn_grad_scale != 1.0:
            scale = c.cnn_grad_scale
            student.frontend.feature_extractor.register_forward_hook(lambda _m, _i, out: GradScale.apply(out, scale))
        log.info("GenDistiller student: %s; initialisation %s; training %s", student_parameters(student), record,
                 self.training_record())
        return GenDistillerTrainer(student, detach=c.detach_history, bptt_steps=c.bptt_steps)

    def training_record(self) -> dict[str, Any]:
        c = self.cfg
        rec: dict[str, Any] = {"mode": c.training_mode}
        if c.training_mode != "teacher_forced":
            rec["history_gradient"] = ("detached" if c.detach_history else
                                       f"truncated every {c.bptt_steps} steps" if c.bptt_steps else "unrolled")
        if c.training_mode == "scheduled_sampling":
            rec["schedule"] = (f"p {c.sampling_start} -> {c.sampling_end} over training fraction "
                               f"{c.ramp_start} -> {c.ramp_end}, per {c.sampling_granularity}")
        return rec

    def sampling_prob(self, step: int) -> float:
        return sampling_probability(self.cfg, step, self.total_steps)

    def student_predictions(self, model, batch: Batch, teacher_layers, step):
        preds, frame_lengths, x0 = model(batch.wav, batch.lengths, torch.stack(teacher_layers, 1), self.sampling_prob(step))
        return list(preds.unbind(1)), frame_lengths, x0

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = super().compute_loss(model, batch, step)
        if self.cfg.training_mode == "scheduled_sampling":
            metrics["sampling_prob"] = self.sampling_prob(step)
        return loss, metrics

    # -- curriculum support (methods/curriculum.py): generation step ``upto`` from own outputs -------
    def student_depth(self, model: nn.Module) -> int:
        return model.student.config.num_steps

    def student_width(self, model: nn.Module) -> int:
        return model.student.hidden_size

    def student_state(self, model: nn.Module, wav, lengths, upto: int):
        x0, frame_lengths = model.student.front_end(wav, lengths)
        preds = model.student.forward_stepwise(x0, frame_lengths, None, None, num_steps=upto,
                                               detach_own=self.cfg.detach_history, bptt_steps=self.cfg.bptt_steps)
        return preds[:, -1], frame_lengths

    def compute_loss_eval(self, model: nn.Module, batch: Batch):
        """Free-running loss and metrics (what inference sees), plus ``tf_*`` teacher-forced ones."""
        student: GenDistillerModel = model.student
        targets, _, mask = self.teacher_targets(batch)
        out = student.encode(batch.wav, batch.lengths)
        loss, metrics = multi_layer_loss(list(out.hidden_states[1:]), targets, self.targets, mask, self.cos_weight)
        if self.cfg.validate_teacher_forced:
            x0 = out.hidden_states[0]
            tf = student.forward_teacher_forced(x0, torch.stack(targets, 1).to(x0.dtype), out.frame_lengths)
            tf_loss, tf_metrics = multi_layer_loss(list(tf.unbind(1)), targets, self.targets, mask, self.cos_weight)
            metrics["tf_loss"] = float(tf_loss)
            metrics.update({f"tf_{k}": v for k, v in tf_metrics.items()})
        return loss, metrics

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        student = model.student
        student.config.teacher_source = self.teacher.source
        student.save_pretrained(str(out_dir))
        record = {
            "method": "gendistiller", "teacher": self.teacher.source, "targets": list(self.cfg.targets),
            "parameters": student_parameters(student).as_dict(), "initialisation": self.init_record,
            "training": self.training_record(), **self.info,
        }
        atomic_write_json(Path(out_dir) / "distill_info.json", record)
        write_model_card(out_dir, record)
