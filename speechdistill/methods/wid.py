"""Weight-inherited distillation (WID; Wu et al., Findings of NAACL 2024, arXiv 2305.09098) for speech
encoders: methods ``wid`` and ``wid_kd``.

The student is the teacher itself with compactors (``models.compactor``): it starts equal to the teacher
and is narrowed by a growing mask (``methods.wid_masks``) while it trains; at the end the compactors are
merged into a stock, narrower HF model.  Original weights learn slowly (``wid.weight_lr``, 1e-6 in the
released code), compactors at ``optim.lr`` (5e-5), new heads at ``wid.head_lr``.

- ``wid`` (faithful): WID trains with the teacher's own pre-training objective and no alignment loss; for
  HuBERT that is masked prediction of discrete units (``methods.masked_prediction``, labels from
  ``speechdistill units``).  HF checkpoints carry no pre-training head, so the projection and unit
  embeddings start fresh (the mask embedding comes from the teacher when it has one).
- ``wid_kd`` (a different method, named so): the same compactor machinery trained with the
  layer-distillation loss (L1 - log sigmoid(cos)) on chosen teacher layers, through readout heads that
  start as identities (so the loss starts at its minimum) and are dropped afterwards.

Dev metrics are computed with the masks applied exactly: they are the merged student's.

Where this port differs from the released (BERT) code, and why:
- the residual mask keeps the same number of dims in every positional-conv group (and, WavLM, the same
  offsets in every head chunk), so that the merged model is a stock HF model; WavLM heads are never
  removed (``wid_masks``);
- the extra first-moment push of λ > 1 is added to masked entries only (the released code also scales
  the whole first moment by 0.9 each step, which looks unintended), and there is no L2 pull on every
  compactor before the first mask update;
- the head strategy removes heads linearly over ``attention_updates`` (released: one head every second
  update; ``attention_updates = 2 x heads removed`` reproduces it);
- the masked-prediction head is new (HF checkpoints drop HuBERT's), so it gets its own learning rate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from speechdistill.config import ConfigError
from speechdistill.data.batch import Batch
from speechdistill.methods.base import DistillMethod
from speechdistill.methods.masked_prediction import (
    MaskedPredictionConfig,
    MaskedPredictionMethod,
    MaskedPredictionStudent,
    UnitPredictionHead,
)
from speechdistill.methods.wid_masks import WidthPlan, apply_masked_decay, plan_widths, update_masks
from speechdistill.models.compactor import RESIDUAL, CompactorEncoder, DecayTarget, compactor_encoder_from
from speechdistill.models.compactor_merge import merged_shape
from speechdistill.models.encoder import EncoderOutput, hf_model_of
from speechdistill.models.teacher import Teacher
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class WIDConfig:
    # Target widths (0 = the teacher's).  head strategy: num_attention_heads x the teacher's head size must
    # equal hidden_size; dim strategy: all heads stay, each hidden_size / heads wide.
    hidden_size: int = 384
    intermediate_size: int = 1536
    num_attention_heads: int = 6
    attention_strategy: Literal["head", "dim"] = "head"
    # Teacher layers the student keeps (1-based, in order); empty = all (WID keeps the depth).
    layers: list[int] = field(default_factory=list)
    # Masks are recomputed every w_step optimizer steps; hidden and FFN reach their targets after
    # mask_updates updates, attention after attention_updates (released code: 500, 16, 8).
    w_step: int = 500
    mask_updates: int = 16
    attention_updates: int = 8
    decay: float = 20.0  # λ: strength of the decay of masked entries
    weight_lr: float = 1.0e-6  # original weights (compactors use optim.lr)
    head_lr: float = 0.0  # new heads (unit head, readouts); 0 = optim.lr
    # Residual-dim scores: the first layer's value compactor (released code) or all residual readers.
    residual_score: Literal["first_value", "all"] = "first_value"

    def validate(self) -> None:
        if self.w_step < 1 or self.mask_updates < 1 or self.attention_updates < 1:
            raise ValueError("wid.w_step, wid.mask_updates and wid.attention_updates must be >= 1")
        if self.decay < 0 or self.weight_lr < 0 or self.head_lr < 0:
            raise ValueError("wid.decay, wid.weight_lr and wid.head_lr must be >= 0")
        if min([self.hidden_size, self.intermediate_size, self.num_attention_heads]) < 0:
            raise ValueError("wid widths must be >= 0 (0 = the teacher's)")

    @property
    def final_mask_step(self) -> int:
        """The optimizer step at which every mask has reached its target."""
        return self.w_step * max(self.mask_updates, self.attention_updates)


@dataclass
class WIDKDConfig:
    targets: list[int] = field(default_factory=lambda: [4, 8, 12])  # teacher layers
    cos_weight: float = 1.0

    def validate(self) -> None:
        if not self.targets:
            raise ValueError("wid_kd.targets must name at least one teacher layer")


class WIDMachinery:
    """What both WID methods share: the compactor student, LR groups, the mask schedule and the decay."""

    def __init__(self, teacher: Teacher, cfg: WIDConfig, total_steps: int):
        if cfg.final_mask_step > total_steps:
            raise ConfigError(
                f"train.steps={total_steps} ends before the masks reach their targets at step {cfg.final_mask_step} "
                "(wid.w_step x max(wid.mask_updates, wid.attention_updates)): raise train.steps or lower wid.w_step"
            )
        self.teacher, self.cfg = teacher, cfg
        self.plan: WidthPlan | None = None
        self.encoder: CompactorEncoder | None = None
        self.targets: list[DecayTarget] = []

    def build_encoder(self) -> CompactorEncoder:
        enc = compactor_encoder_from(self.teacher.encoder, self.cfg.layers or None)
        self.plan = plan_widths(enc, self.cfg.hidden_size, self.cfg.intermediate_size, self.cfg.num_attention_heads,
                                self.cfg.attention_strategy)
        log.info("WID: %d layers, %s; masks grow every %d steps, at target by step %d", enc.num_output_layers,
                 self.plan.describe(), self.cfg.w_step, self.cfg.final_mask_step)
        self.encoder = enc
        return enc

    def set_decay_targets(self, extra: list[DecayTarget]) -> None:
        self.targets = [*self.encoder.decay_targets(), *extra]

    def param_groups(self, model: nn.Module, head_params: list[nn.Parameter], lr: float,
                     weight_decay: float) -> list[dict]:
        compactors = {id(p) for p in self.encoder.compactors()}
        heads = {id(p) for p in head_params}
        groups: dict[str, list[nn.Parameter]] = {"compactors": [], "heads": [], "weights": []}
        for p in model.parameters():
            if not p.requires_grad:
                continue
            key = "compactors" if id(p) in compactors else "heads" if id(p) in heads else "weights"
            groups[key].append(p)
        return [
            {"params": groups["compactors"], "lr": lr, "weight_decay": 0.0},
            {"params": groups["heads"], "lr": self.cfg.head_lr or lr, "weight_decay": weight_decay},
            {"params": groups["weights"], "lr": self.cfg.weight_lr, "weight_decay": 0.0},
        ]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        n = step + 1  # the released code counts steps from 1
        if n % self.cfg.w_step == 0:
            update = n // self.cfg.w_step
            update_masks(self.encoder, self.plan, update, self.cfg.mask_updates, self.cfg.attention_updates,
                         self.cfg.residual_score)
            if update <= max(self.cfg.mask_updates, self.cfg.attention_updates):
                m = self.encoder.masks
                log.info("WID mask update %d (step %d): residual %d, FFN %d, attention %d kept", update, n,
                         int(m.residual.sum()), int(m.ffn[0].sum()), int(m.attention[0].sum()))
        if self.encoder.masks.active:
            apply_masked_decay(self.targets, optimizer, self.cfg.decay)

    def info(self) -> dict:
        shape = merged_shape(self.encoder)
        return {"wid": {"merged": shape, "layers": self.cfg.layers or list(range(1, self.encoder.num_output_layers + 1)),
                        "attention_strategy": self.cfg.attention_strategy}}


class WIDMethod(MaskedPredictionMethod):
    """``wid``: compactors + HuBERT masked prediction of the teacher's units."""

    name = "wid"

    def __init__(self, teacher: Teacher, cfg: WIDConfig, mp: MaskedPredictionConfig, info: dict | None = None,
                 total_steps: int = 1):
        super().__init__(mp)
        self.wid = WIDMachinery(teacher, cfg, total_steps)
        self.teacher_source = teacher.source
        self.info = info or {}
        self._head_params: list[nn.Parameter] = []

    def setup(self, device) -> None:
        pass  # no teacher forward: the units are precomputed

    def build_model(self) -> nn.Module:
        enc = self.wid.build_encoder()
        self.attach_targets(enc.config)
        hf = hf_model_of(enc)
        head = UnitPredictionHead(enc.config.hidden_size, self.targets.num_units, self.mp.final_dim, self.mp.logit_temp,
                                  getattr(hf, "masked_spec_embed", None), masks=enc.masks)
        self._head_params = list(head.parameters())
        self.wid.set_decay_targets(head.decay_targets())
        self.wid.teacher = None  # copied: free the original
        return MaskedPredictionStudent(enc, head)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return self.wid.param_groups(model, self._head_params, lr, weight_decay)

    def before_optimizer_step(self, model: nn.Module, optimizer, step: int) -> None:
        self.wid.before_optimizer_step(optimizer, step)

    @torch.no_grad()
    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        with model.encoder.masks.applied():
            return super().validate(model, batches)

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        model.encoder.save_pretrained(out_dir)
        atomic_write_json(Path(out_dir) / "distill_info.json",
                          {"method": self.name, "teacher": self.teacher_source, **self.wid.info(), **self.info})


class ResidualReadout(nn.Module):
    """A linear readout of the residual stream (WID-KD's prediction head), identity-initialised."""

    def __init__(self, hidden: int, out: int, masks):
        super().__init__()
        self.linear = nn.Linear(hidden, out)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(out, hidden))
            self.linear.bias.zero_()
        self._masks_ref = (masks,)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        m = self._masks_ref[0]
        w = self.linear.weight
        if m.hard:
            w = w * m.residual[None, :].to(w.dtype)
        return nn.functional.linear(h, w, self.linear.bias)

    def decay_targets(self) -> list[DecayTarget]:
        m = self._masks_ref[0]
        return [(self.linear.weight, lambda: m.keep(RESIDUAL)[None, :])]


class WIDKDStudent(nn.Module):
    def __init__(self, encoder: CompactorEncoder, teacher_hidden: int, student_layers: list[int]):
        super().__init__()
        self.encoder = encoder
        self.student_layers = list(student_layers)
        self.heads = nn.ModuleList(ResidualReadout(encoder.hidden_size, teacher_hidden, encoder.masks)
                                   for _ in student_layers)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[EncoderOutput, list[torch.Tensor]]:
        out = self.encoder.encode(wav, lengths, upto_layer=max(self.student_layers))
        return out, [head(out.hidden_states[i]) for head, i in zip(self.heads, self.student_layers)]


class WIDKDMethod(DistillMethod):
    """``wid_kd``: compactors + the DistilHuBERT layer loss on ``wid_kd.targets`` (not WID's objective)."""

    name = "wid_kd"

    def __init__(self, teacher: Teacher, cfg: WIDConfig, kd: WIDKDConfig, info: dict | None = None,
                 total_steps: int = 1):
        super().__init__(teacher, kd.targets, kd.cos_weight)
        self.wid = WIDMachinery(teacher, cfg, total_steps)
        kept = cfg.layers or list(range(1, teacher.num_layers + 1))
        missing = [t for t in kd.targets if t not in kept]
        if missing:
            raise ConfigError(f"wid_kd.targets {missing} are teacher layers the student drops (wid.layers={kept})")
        self.student_layers = [kept.index(t) + 1 for t in kd.targets]
        self.info = info or {}
        self._head_params: list[nn.Parameter] = []

    def build_model(self) -> nn.Module:
        enc = self.wid.build_encoder()
        model = WIDKDStudent(enc, self.teacher.hidden_size, self.student_layers)
        self._head_params = list(model.heads.parameters())
        self.wid.set_decay_targets([t for h in model.heads for t in h.decay_targets()])
        return model

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return self.wid.param_groups(model, self._head_params, lr, weight_decay)

    def before_optimizer_step(self, model: nn.Module, optimizer, step: int) -> None:
        self.wid.before_optimizer_step(optimizer, step)

    def student_predictions(self, model, batch: Batch, teacher_layers, step):
        out, preds = model(batch.wav, batch.lengths)
        return preds, out.frame_lengths

    @torch.no_grad()
    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        with model.encoder.masks.applied():
            return super().validate(model, batches)

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        model.encoder.save_pretrained(out_dir)
        atomic_write_json(Path(out_dir) / "distill_info.json", {
            "method": self.name, "teacher": self.teacher.source, "targets": self.targets, **self.wid.info(),
            **self.info,
        })
