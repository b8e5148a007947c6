"""``speechdistill distill``: the typed recipe and the glue from recipe to method to engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from speechdistill import SAMPLE_RATE
from speechdistill.config import ConfigError, to_dict
from speechdistill.data.dataset import DataConfig
from speechdistill.methods.distilhubert import DistilHuBERTConfig, DistilHuBERTMethod
from speechdistill.methods.gendistiller import GenDistillerMethodConfig
from speechdistill.methods.speed import SpeedConfig
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
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not self.data.train_manifest:
            raise ConfigError("data.train_manifest is required (e.g. data.train_manifest=corpus/train.jsonl)")


def build_method(cfg: DistillConfig):
    from speechdistill.models.load import load_teacher

    teacher = load_teacher(cfg.teacher, seed=cfg.train.seed)
    info = {"recipe": to_dict(cfg)}
    if cfg.method == "distilhubert":
        method = DistilHuBERTMethod(teacher, cfg.distilhubert, info)
    else:
        from speechdistill.methods.gendistiller import GenDistillerMethod

        method = GenDistillerMethod(teacher, cfg.gendistiller, info, total_steps=cfg.train.steps)
    method.speed = cfg.speed
    return method


def check_teacher_cache(cfg: DistillConfig, method) -> None:
    """Print the teacher target cache's storage cost before training starts; refuse it over the limit."""
    from speechdistill.methods.teacher_cache import audio_sizes, estimate_cache

    if not cfg.speed.teacher_cache_dir:
        return
    d = cfg.data
    est = estimate_cache(audio_sizes(d.train_manifest, d.min_seconds, d.max_seconds),
                         round(d.crop_seconds * SAMPLE_RATE), method.teacher.config, len(method.targets),
                         method.teacher.hidden_size)
    log.info("%s", est.describe(len(method.targets), method.teacher.hidden_size))
    limit = cfg.speed.teacher_cache_max_gb
    if limit and est.bytes_per_epoch > limit * 1e9:
        raise ConfigError(
            f"speed.teacher_cache_dir: an epoch of targets needs {est.bytes_per_epoch / 1e9:.1f} GB, over "
            f"speed.teacher_cache_max_gb={limit}; raise the limit or turn the cache off"
        )


def run_distill(cfg: DistillConfig, resume: bool = False) -> TrainResult:
    for m in (cfg.data.train_manifest, cfg.data.dev_manifest):
        if m and not Path(m).is_file():
            raise ConfigError(
                f"manifest {m} does not exist; make one with `speechdistill data synth --out DIR` "
                "(synthetic speech) or `speechdistill data librispeech ...`"
            )
    method = build_method(cfg)
    check_teacher_cache(cfg, method)
    log.info("distilling %s -> %s student into %s", cfg.teacher, cfg.method, cfg.out_dir)
    return train(method, cfg.train, cfg.optim, cfg.data, Path(cfg.out_dir), resume=resume, run_config=to_dict(cfg))
