"""``speechdistill distill``: the typed recipe and the glue from recipe to method to engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from speechdistill.config import ConfigError, to_dict
from speechdistill.data.dataset import DataConfig
from speechdistill.methods.distilhubert import DistilHuBERTConfig, DistilHuBERTMethod
from speechdistill.methods.gendistiller import GenDistillerMethodConfig
from speechdistill.methods.masked_prediction import MaskedPredictionConfig
from speechdistill.methods.masked_units import MaskedUnitsConfig
from speechdistill.methods.wid import WIDConfig, WIDKDConfig
from speechdistill.train.engine import TrainConfig, TrainResult, train
from speechdistill.train.optim import OptimConfig

log = logging.getLogger(__name__)

METHODS = ("distilhubert", "gendistiller", "wid", "wid_kd", "masked_units")
# Methods whose targets are unit labels from `speechdistill units`.
UNIT_METHODS = ("wid", "masked_units")


@dataclass
class DistillConfig:
    method: Literal["distilhubert", "gendistiller", "wid", "wid_kd", "masked_units"] = "gendistiller"
    # Local directory, hub id, builtin:reference, or tiny:hubert / tiny:wavlm(-layer) (random, smoke runs).
    teacher: str = "facebook/hubert-base-ls960"
    out_dir: str = "runs/distill"
    distilhubert: DistilHuBERTConfig = field(default_factory=DistilHuBERTConfig)
    gendistiller: GenDistillerMethodConfig = field(default_factory=GenDistillerMethodConfig)
    # WID compactors and schedule (methods wid and wid_kd); wid_kd's layer targets.
    wid: WIDConfig = field(default_factory=WIDConfig)
    wid_kd: WIDKDConfig = field(default_factory=WIDKDConfig)
    # HuBERT-style masked prediction of unit labels (methods wid and masked_units); the plain student.
    masked_prediction: MaskedPredictionConfig = field(default_factory=MaskedPredictionConfig)
    masked_units: MaskedUnitsConfig = field(default_factory=MaskedUnitsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not self.data.train_manifest:
            raise ConfigError("data.train_manifest is required (e.g. data.train_manifest=corpus/train.jsonl)")
        if self.method in UNIT_METHODS and not self.masked_prediction.labels:
            raise ConfigError(
                f"method={self.method} needs unit labels: masked_prediction.labels=DIR, made with "
                "`speechdistill units teacher=... manifest=TRAIN_MANIFEST out=DIR` (label the dev manifest too)"
            )


def build_method(cfg: DistillConfig):
    from speechdistill.models.load import load_teacher

    teacher = load_teacher(cfg.teacher, seed=cfg.train.seed)
    info = {"recipe": to_dict(cfg)}
    if cfg.method == "distilhubert":
        return DistilHuBERTMethod(teacher, cfg.distilhubert, info)
    if cfg.method == "wid":
        from speechdistill.methods.wid import WIDMethod

        return WIDMethod(teacher, cfg.wid, cfg.masked_prediction, info, total_steps=cfg.train.steps)
    if cfg.method == "wid_kd":
        from speechdistill.methods.wid import WIDKDMethod

        return WIDKDMethod(teacher, cfg.wid, cfg.wid_kd, info, total_steps=cfg.train.steps)
    if cfg.method == "masked_units":
        from speechdistill.methods.masked_units import MaskedUnitsMethod

        return MaskedUnitsMethod(teacher, cfg.masked_units, cfg.masked_prediction, info)
    from speechdistill.methods.gendistiller import GenDistillerMethod

    return GenDistillerMethod(teacher, cfg.gendistiller, info, total_steps=cfg.train.steps)


def run_distill(cfg: DistillConfig, resume: bool = False) -> TrainResult:
    for m in (cfg.data.train_manifest, cfg.data.dev_manifest):
        if m and not Path(m).is_file():
            raise ConfigError(
                f"manifest {m} does not exist; make one with `speechdistill data synth --out DIR` "
                "(synthetic speech) or `speechdistill data librispeech ...`"
            )
    method = build_method(cfg)
    log.info("distilling %s -> %s student into %s", cfg.teacher, cfg.method, cfg.out_dir)
    return train(method, cfg.train, cfg.optim, cfg.data, Path(cfg.out_dir), resume=resume, run_config=to_dict(cfg))
