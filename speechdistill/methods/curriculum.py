"""Curriculum extraction (Gupta & Karmalkar, arXiv 2503.17494) around any layer-distillation method.

The student is first trained to match a fixed random projection of a SHALLOW teacher layer, then of
deeper layers in turn, and only in the last stage on the wrapped method's own objective.  Stage i pairs
a student depth s_i with a teacher layer t_i (both increasing) and trains

    loss_i = D( student_state(s_i),  P_i · teacher_layer(t_i) )

with P_i a fixed d_S x d_T matrix (Gaussian N(0, 1/d_S) entries, or a random orthogonal one), D the
DistilHuBERT distance (L1 - log σ(cos)) or MSE.  In stage i the teacher runs only up to layer t_i and
the student only up to s_i, which is where the curriculum saves compute over one-shot distillation; the
engine's FLOP counter (``train.count_flops``) measures that per step, so runs compare at equal FLOPs.

How stages map onto students:

- DistilHuBERT-shaped students: s_i is a student transformer layer (``encode(upto_layer=s_i)``); the
  prediction heads only train in the final stage.
- GenDistiller: s_i is a generation step; the student generates s_i steps from its own outputs (as at
  inference, with the history gradient of its ``training_mode``) and step s_i is compared with the
  projected teacher layer.  Its own targets (t_k for step k) are the natural choice of t_i.

The projections are buffers of the trained module, so they are saved in every checkpoint and a resume
continues on exactly the same targets; they are drawn from their own seeded generator, so the global RNG
stream (and with it the rest of training) is the same as without a curriculum: a curriculum with no
projection stages equals plain distillation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechdistill.config import ConfigError
from speechdistill.data.batch import Batch
from speechdistill.methods.losses import layer_loss
from speechdistill.models.frames import frame_mask

log = logging.getLogger(__name__)


@dataclass
class CurriculumStage:
    student_layer: int  # s_i: student layer (DistilHuBERT) or generation step (GenDistiller), >= 1
    teacher_layer: int  # t_i: teacher layer whose projection is the target, >= 1
    steps: int  # optimizer steps of this stage


@dataclass
class CurriculumConfig:
    # Projection stages, shallow to deep; the remaining train.steps run the wrapped method's objective.
    # Empty: no curriculum (plain distillation).
    stages: list[CurriculumStage] = field(default_factory=list)
    projection: Literal["gaussian", "orthogonal"] = "gaussian"
    loss: Literal["l1_cos", "mse"] = "l1_cos"
    seed: int = 0  # of the projections (independent of train.seed)

    def validate(self) -> None:
        prev = (0, 0)
        for i, st in enumerate(self.stages):
            if st.student_layer < 1 or st.teacher_layer < 1 or st.steps < 1:
                raise ConfigError(f"curriculum.stages[{i}]: student_layer, teacher_layer and steps must be >= 1")
            if st.student_layer < prev[0] or st.teacher_layer < prev[1]:
                raise ConfigError(
                    f"curriculum.stages[{i}]: stages must not get shallower (student {prev[0]} -> {st.student_layer}, "
                    f"teacher {prev[1]} -> {st.teacher_layer})"
                )
            prev = (st.student_layer, st.teacher_layer)

    @property
    def projection_steps(self) -> int:
        return sum(st.steps for st in self.stages)


def make_projection(d_s: int, d_t: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """P [d_S, d_T]: Gaussian with N(0, 1/d_S) entries, or orthonormal rows/columns of the same scale."""
    g = torch.randn(d_s, d_t, generator=generator, dtype=torch.float64) / d_s**0.5
    if kind == "orthogonal":
        q, _ = torch.linalg.qr(g.T if d_t >= d_s else g)  # orthonormal columns of the taller shape
        g = q.T if d_t >= d_s else q
    return g.float()


class CurriculumModel(nn.Module):
    """The wrapped method's trainable model plus the stage projections (buffers).

    ``forward("final", ...)`` is the wrapped model's own forward; ``forward("stage", wav, lengths, s)``
    the student state at depth s.  Both go through this module's forward so DDP sees every call."""

    def __init__(self, inner: nn.Module, student_state, projections: list[torch.Tensor]):
        super().__init__()
        self.inner = inner
        self._student_state = student_state
        for i, p in enumerate(projections):
            self.register_buffer(f"projection_{i}", p)

    def projection(self, i: int) -> torch.Tensor:
        return getattr(self, f"projection_{i}")

    def forward(self, mode: str, *args, **kwargs):
        if mode == "final":
            return self.inner(*args, **kwargs)
        return self._student_state(self.inner, *args, **kwargs)


class _InnerView:
    """What the wrapped method's ``compute_loss`` sees as its model: calls go through the (possibly DDP
    wrapped) curriculum model, attributes come from the wrapped model."""

    def __init__(self, model: nn.Module):
        self._model = model

    def __call__(self, *args, **kwargs):
        return self._model("final", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(self._model, "module", self._model).inner, name)


class CurriculumMethod:
    """A curriculum of projection stages before the wrapped method's own objective (module doc)."""

    best_metric = None

    def __init__(self, inner, cfg: CurriculumConfig, total_steps: int):
        if cfg.projection_steps >= total_steps:
            raise ConfigError(
                f"the curriculum's projection stages take {cfg.projection_steps} steps, but train.steps is "
                f"{total_steps}: leave steps for the final stage (the method's own objective)"
            )
        if not hasattr(inner, "student_state"):
            raise ConfigError(f"method {inner.name!r} has no curriculum support (student_state)")
        self.inner = inner
        self.cfg = cfg
        self.name = f"curriculum+{inner.name}"
        self.teacher = inner.teacher
        bad = [st.teacher_layer for st in cfg.stages if st.teacher_layer > self.teacher.num_layers]
        if bad:
            raise ConfigError(f"curriculum teacher layers {bad} exceed the teacher's {self.teacher.num_layers} layers")
        self.boundaries = []
        end = 0
        for st in cfg.stages:
            end += st.steps
            self.boundaries.append(end)

    # -- protocol ---------------------------------------------------------------------------------

    def setup(self, device: torch.device) -> None:
        self.inner.setup(device)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        prepare = getattr(self.inner, "prepare_model", None)
        if prepare is not None:
            prepare(model.inner)
        return model

    def build_model(self) -> nn.Module:
        inner_model = self.inner.build_model()
        depth = self.inner.student_depth(inner_model)
        too_deep = [st.student_layer for st in self.cfg.stages if st.student_layer > depth]
        if too_deep:
            raise ConfigError(f"curriculum student layers {too_deep} exceed the student's depth {depth}")
        gen = torch.Generator().manual_seed(self.cfg.seed)
        d_s, d_t = self.inner.student_width(inner_model), self.teacher.hidden_size
        projections = [make_projection(d_s, d_t, self.cfg.projection, gen) for _ in self.cfg.stages]
        return CurriculumModel(inner_model, self.inner.student_state, projections)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return self.inner.param_groups(model.inner, lr, weight_decay)

    def stage_of(self, step: int) -> int:
        """Index of the projection stage that trains ``step``, or -1 for the final stage."""
        for i, end in enumerate(self.boundaries):
            if step < end:
                return i
        return -1

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        i = self.stage_of(step) if step >= 0 else -1
        if i < 0:
            loss, metrics = self.inner.compute_loss(_InnerView(model), batch, step)
            return loss, {**metrics, "stage": float(len(self.cfg.stages))}
        loss, metrics = self.stage_loss(model, batch, i)
        return loss, {**metrics, "stage": float(i)}

    def stage_loss(self, model: nn.Module, batch: Batch, i: int) -> tuple[torch.Tensor, dict[str, float]]:
        st = self.cfg.stages[i]
        out = self.teacher(batch.wav, batch.lengths, upto_layer=st.teacher_layer)
        target = out.hidden_states[st.teacher_layer]
        state, s_lengths = model("stage", batch.wav, batch.lengths, st.student_layer)
        if not torch.equal(out.frame_lengths.cpu(), s_lengths.cpu()):
            raise RuntimeError(f"student and teacher frame counts differ ({s_lengths.tolist()} vs "
                               f"{out.frame_lengths.tolist()})")
        proj = getattr(model, "module", model).projection(i)
        target = target.float() @ proj.T.to(target.device)
        mask = frame_mask(out.frame_lengths, target.shape[1])
        if self.cfg.loss == "mse":
            m = mask.to(state.dtype)[..., None]
            loss = (((state.float() - target) ** 2) * m).sum() / (m.sum() * target.shape[-1]).clamp(min=1)
            cos = (F.cosine_similarity(state.float(), target, dim=-1) * mask).sum() / mask.sum().clamp(min=1)
            return loss, {f"stage_mse_L{st.teacher_layer}": float(loss.detach()),
                          f"stage_cos_L{st.teacher_layer}": float(cos)}
        loss, l1, cos = layer_loss(state, target, mask, self.inner.cos_weight)
        return loss, {f"stage_l1_L{st.teacher_layer}": float(l1.detach()), f"stage_cos_L{st.teacher_layer}": float(cos.detach())}

    @torch.no_grad()
    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        # Always the wrapped method's own dev metrics: curves compare with one-shot runs on the same scale.
        return self.inner.validate(model.inner, batches)

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        self.inner.info = {**getattr(self.inner, "info", {}), "curriculum": {
            "stages": [vars(st) for st in self.cfg.stages], "projection": self.cfg.projection, "loss": self.cfg.loss,
            "seed": self.cfg.seed,
        }}
        self.inner.save_artifact(model.inner, out_dir)
