"""A cheaper student front end during distillation: build it from the teacher, and train it.

``FrontEnd`` is what the distillation methods see of ``models.edge_frontend.FrontEndConfig``:

- ``apply(hf_model)``: reshape the student's (teacher-copied) HF front end to the cheaper shapes and
  initialise it from the teacher on calibration audio (``prune.frontend``);
- ``apply_gendistiller(student)``: the same for a GenDistiller student's front end, keeping its config in sync;
- ``wrap(hf_model, normalize)``: the encoder the student is (``HFEncoder``, or ``ReducedRateEncoder`` when
  the body runs at a lower frame rate);
- ``loss(student_x0, teacher_x0, mask)``: the front-end loss, DistilHuBERT's layer loss (L1 + cosine) between
  the student's hidden_states[0] and the teacher's, weighted by ``loss_weight``.  The thin CNN and the new
  positional conv start from a least-squares approximation of the teacher's; this loss keeps pulling the
  front end's output towards the teacher's input to layer 1 while the layer targets train the rest.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from speechdistill.config import ConfigError
from speechdistill.methods.losses import layer_loss
from speechdistill.models.edge_frontend import (
    FrontEndConfig,
    ReducedRateEncoder,
    front_end_overrides,
    reshape_front_end,
)
from speechdistill.models.encoder import HFEncoder, hf_model_of
from speechdistill.models.teacher import Teacher

log = logging.getLogger(__name__)


class FrontEnd:
    def __init__(self, cfg: FrontEndConfig, teacher: Teacher, seed: int = 0):
        self.cfg = cfg
        self.teacher = teacher
        self.seed = seed
        self.report = None  # prune.frontend.FrontEndInitReport after apply()
        try:
            self.teacher_hf = hf_model_of(teacher)
        except TypeError:
            raise ConfigError(
                f"a cheaper front end is initialised from a HuBERT/WavLM/wav2vec 2.0 teacher; "
                f"{type(teacher.encoder).__name__} has no such front end"
            ) from None
        try:
            self.overrides = front_end_overrides(self.teacher_hf.config, cfg)
        except ValueError as e:  # a shape this teacher cannot take: a config problem, named as such
            raise ConfigError(str(e)) from None
        widest = min(int(c) for c in self.teacher_hf.config.conv_dim)
        if cfg.conv_init == "id" and cfg.conv_channels > widest:
            raise ConfigError(f"frontend.conv_channels={cfg.conv_channels}: channel selection can only thin the "
                              f"teacher's CNN ({widest} channels); use conv_init=random for a wider one")

    @property
    def trains(self) -> bool:
        """Whether the front-end loss is part of the training loss."""
        return self.cfg.loss_weight > 0

    def _calibration_audio(self):
        if not self.cfg.needs_calibration:
            return None
        if not self.cfg.calib_manifest:
            raise ConfigError("frontend: conv_init=id / pos_conv_init=fit need calibration audio; set "
                              "frontend.calib_manifest (run.distill defaults it to data.train_manifest)")
        from speechdistill.prune.calib import load_calibration_audio

        log.info("front end: %d calibration utterances from %s", self.cfg.num_calib, self.cfg.calib_manifest)
        return load_calibration_audio(self.cfg.calib_manifest, self.cfg.num_calib, self.cfg.calib_max_seconds, self.seed)

    def apply(self, model: nn.Module) -> nn.Module:
        """Reshape and initialise the front end of ``model`` (an HF model whose front end is the teacher's)."""
        from speechdistill.prune.frontend import init_front_end

        hf = hf_model_of(model)
        rebuilt = reshape_front_end(hf, self.overrides)
        torch.manual_seed(self.seed)  # "random" inits and the sketches are reproducible
        self.report = init_front_end(
            hf, self.teacher_hf, self.cfg, rebuilt, self._calibration_audio(),
            normalize=bool(getattr(self.teacher.encoder, "normalize", False)),
        )
        return model

    def apply_gendistiller(self, student: nn.Module) -> None:
        """``apply`` to a GenDistiller student's front end; its config then describes the new front end."""
        from speechdistill.models.gendistiller import frontend_config_dict

        if self.cfg.frame_rate_reduction > 1:
            raise ConfigError(
                "frontend.frame_rate_reduction is not supported for GenDistiller students yet (its teacher-forced "
                "history runs at the teacher's frame rate); use it with distilhubert"
            )
        self.apply(student.frontend)
        student.config.frontend_config = frontend_config_dict(student.frontend.config)

    def wrap(self, model: nn.Module, normalize: bool) -> nn.Module:
        """The student encoder around ``model``: stock ``HFEncoder``, or ``ReducedRateEncoder``."""
        if self.cfg.frame_rate_reduction == 1:
            return HFEncoder(model, normalize=normalize)
        t_cfg = self.teacher_hf.config
        return ReducedRateEncoder.wrap(model, self.cfg.frame_rate_reduction, self.cfg.upsample,
                                       t_cfg.conv_kernel, t_cfg.conv_stride, normalize)

    def loss(
        self, student_x0: torch.Tensor, teacher_x0: torch.Tensor, mask: torch.Tensor, cos_weight: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if student_x0.shape != teacher_x0.shape:
            raise RuntimeError(
                f"front-end loss: student hidden_states[0] {tuple(student_x0.shape)} and the teacher's "
                f"{tuple(teacher_x0.shape)} differ in shape"
            )
        loss, l1, cos = layer_loss(student_x0, teacher_x0, mask, cos_weight)
        return self.cfg.loss_weight * loss, {"l1_L0": float(l1.detach()), "cos_L0": float(cos.detach())}


def build_front_end(cfg: FrontEndConfig, teacher: Teacher, train_manifest: str = "", seed: int = 0) -> FrontEnd | None:
    """The methods' ``front_end`` for ``cfg`` (None when it keeps the teacher's front end)."""
    if not cfg.changes_front_end:
        return None
    from dataclasses import replace

    if not cfg.calib_manifest and train_manifest:
        cfg = replace(cfg, calib_manifest=train_manifest)
    return FrontEnd(cfg, teacher, seed)
