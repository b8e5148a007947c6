"""Masked prediction of a teacher's units by an ordinary student (method ``masked_units``).

DiceHuBERT (Chi et al., Interspeech 2025, arXiv 2507.02911) distills HuBERT this way: the student,
e.g. 12 layers x 384, is trained with HuBERT's own masked-prediction loss on k-means units of the
teacher's features, with no regression toward the teacher's layers.  The student is random (with the
teacher's CNN copied by default), the teacher's first layers, or any encoder directory; it is written
as a stock HF model (the prediction head is dropped, as HuBERT's is).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from speechdistill.config import ConfigError
from speechdistill.data.batch import Batch
from speechdistill.methods.base import default_param_groups
from speechdistill.methods.losses import GradScale
from speechdistill.methods.masked_prediction import (
    MaskedPredictionConfig,
    MaskedPredictionMethod,
    MaskedPredictionStudent,
    UnitPredictionHead,
)
from speechdistill.models.encoder import HFEncoder, hf_model_of
from speechdistill.models.hf import family_of, model_class
from speechdistill.models.teacher import Teacher
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class MaskedUnitsConfig:
    # random | teacher (its first num_layers layers, teacher width) | an encoder directory
    init: str = "random"
    # Student shape for init=random (0 = the teacher's); init=teacher takes num_layers only.
    num_layers: int = 12
    hidden_size: int = 384
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    # init=random: start from the teacher's CNN (and the feature projection's input norm).
    copy_front_end: bool = True
    cnn_grad_scale: float = 0.1  # HuBERT's feature_grad_mult
    freeze_cnn: bool = False

    def validate(self) -> None:
        if min(self.num_layers, self.hidden_size, self.num_attention_heads, self.intermediate_size) < 0:
            raise ValueError("masked_units widths must be >= 0 (0 = the teacher's)")
        if self.hidden_size and self.num_attention_heads and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"masked_units.hidden_size={self.hidden_size} must split into "
                             f"{self.num_attention_heads} heads")


def build_plain_student(teacher: Teacher, cfg: MaskedUnitsConfig) -> nn.Module:
    """The student encoder (encoder contract) from ``cfg.init``."""
    t_model = hf_model_of(teacher.encoder)
    normalize = getattr(teacher.encoder, "normalize", False)
    if cfg.init not in ("random", "teacher"):
        from speechdistill.models.load import load_encoder

        enc = load_encoder(cfg.init)
        hf_model_of(enc)  # must have a HuBERT-style front end for the span mask
        enc.train()
        return enc
    t_cfg = t_model.config
    if cfg.init == "teacher":
        for key in ("hidden_size", "num_attention_heads", "intermediate_size"):
            value = getattr(cfg, key)
            if value and value != getattr(t_cfg, key):
                raise ConfigError(
                    f"masked_units.init=teacher keeps the teacher's widths ({key}={getattr(t_cfg, key)}); set "
                    f"masked_units.{key}=0, or start narrower from init=random, a `prune`d or a WID-merged directory"
                )
        layers = cfg.num_layers or len(t_model.encoder.layers)
        if layers > len(t_model.encoder.layers):
            raise ConfigError(f"masked_units.num_layers={layers} > the teacher's {len(t_model.encoder.layers)} layers")
        model = copy.deepcopy(t_model)
        model.encoder.layers = nn.ModuleList(list(model.encoder.layers)[:layers])
        model.config.num_hidden_layers = layers
    else:
        s_cfg = copy.deepcopy(t_cfg)
        for key, value in (("num_hidden_layers", cfg.num_layers), ("hidden_size", cfg.hidden_size),
                           ("num_attention_heads", cfg.num_attention_heads),
                           ("intermediate_size", cfg.intermediate_size)):
            if value:
                setattr(s_cfg, key, value)
        if s_cfg.hidden_size % s_cfg.num_attention_heads or s_cfg.hidden_size % s_cfg.num_conv_pos_embedding_groups:
            raise ConfigError(
                f"student hidden_size={s_cfg.hidden_size} must split into {s_cfg.num_attention_heads} heads and "
                f"{s_cfg.num_conv_pos_embedding_groups} positional-conv groups"
            )
        model = model_class(family_of(s_cfg))(s_cfg)
        if cfg.copy_front_end:
            model.feature_extractor.load_state_dict(t_model.feature_extractor.state_dict())
            fp_t, fp_s = t_model.feature_projection, model.feature_projection
            if hasattr(fp_t, "layer_norm") and hasattr(fp_s, "layer_norm"):
                fp_s.layer_norm.load_state_dict(fp_t.layer_norm.state_dict())
    model.requires_grad_(True)
    model.config.layerdrop = 0.0
    model.train()
    return HFEncoder(model, normalize=normalize)


class MaskedUnitsMethod(MaskedPredictionMethod):
    name = "masked_units"

    def __init__(self, teacher: Teacher, cfg: MaskedUnitsConfig, mp: MaskedPredictionConfig, info: dict | None = None):
        super().__init__(mp)
        self.teacher = teacher
        self.teacher_source = teacher.source
        self.cfg = cfg
        self.info = info or {}

    def setup(self, device) -> None:
        pass  # the teacher is only read to build the student; its units are precomputed

    def build_model(self) -> nn.Module:
        encoder = build_plain_student(self.teacher, self.cfg)
        hf = hf_model_of(encoder)
        self.attach_targets(hf.config)
        if self.cfg.freeze_cnn:
            hf.feature_extractor.requires_grad_(False)
        elif self.cfg.cnn_grad_scale != 1.0:
            scale = self.cfg.cnn_grad_scale
            hf.feature_extractor.register_forward_hook(lambda _m, _i, out: GradScale.apply(out, scale))
        mask_emb = getattr(hf, "masked_spec_embed", None) if self.cfg.init != "random" else None
        head = UnitPredictionHead(hf.config.hidden_size, self.targets.num_units, self.mp.final_dim,
                                  self.mp.logit_temp, mask_emb)
        log.info("masked-unit student: %d layers x %d, %d units", len(hf.encoder.layers), hf.config.hidden_size,
                 self.targets.num_units)
        self.teacher = None  # not needed any more: free its memory
        return MaskedPredictionStudent(encoder, head)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return default_param_groups(model, lr, weight_decay)

    def compute_loss(self, model: nn.Module, batch: Batch, step: int):
        return self._loss(model, batch)

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        model.encoder.save_pretrained(out_dir)
        atomic_write_json(Path(out_dir) / "distill_info.json",
                          {"method": self.name, "teacher": self.teacher_source, **self.info})
