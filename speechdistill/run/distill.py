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
from speechdistill.models.frontend import FrontEndConfig
from speechdistill.train.engine import TrainConfig, TrainResult, train
from speechdistill.train.optim import OptimConfig

log = logging.getLogger(__name__)

METHODS = ("distilhubert", "gendistiller")


@dataclass
class DistillConfig:
    method: Literal["distilhubert", "gendistiller"] = "gendistiller"
    # Local directory, hub id, builtin:reference, or tiny:hubert / tiny:wavlm(-layer) (random, smoke runs).
    teacher: str = "facebook/hubert-base-ls960"
    out_dir: str = "runs/distill"
    distilhubert: DistilHuBERTConfig = field(default_factory=DistilHuBERTConfig)
    gendistiller: GenDistillerMethodConfig = field(default_factory=GenDistillerMethodConfig)
    # A cheaper student front end (thin CNN, cheaper positional conv, lower frame rate), for any method.
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not self.data.train_manifest:
            raise ConfigError("data.train_manifest is required (e.g. data.train_manifest=corpus/train.jsonl)")
        if self.frontend.changes_front_end and self.method == "distilhubert" and self.distilhubert.student_init:
            raise ConfigError("frontend.* reshapes a front end copied from the teacher; it cannot be combined "
                              "with distilhubert.student_init (that student keeps its own front end)")


def build_method(cfg: DistillConfig):
    from speechdistill.models.load import load_teacher

    from speechdistill.methods.frontend import build_front_end

    teacher = load_teacher(cfg.teacher, seed=cfg.train.seed)
    info = {"recipe": to_dict(cfg)}
    if cfg.method == "distilhubert":
        method = DistilHuBERTMethod(teacher, cfg.distilhubert, info)
    else:
        from speechdistill.methods.gendistiller import GenDistillerMethod

        method = GenDistillerMethod(teacher, cfg.gendistiller, info, total_steps=cfg.train.steps)
    method.front_end = build_front_end(cfg.frontend, teacher, cfg.data.train_manifest, cfg.train.seed)
    return method


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
