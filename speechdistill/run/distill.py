"""``speechdistill distill``: the typed recipe and the glue from recipe to method to engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Literal

from speechdistill import SAMPLE_RATE
from speechdistill.config import ConfigError, check_ranges, to_dict
from speechdistill.data.dataset import DataConfig
from speechdistill.methods.curriculum import CurriculumConfig
from speechdistill.methods.distilhubert import DistilHuBERTConfig, DistilHuBERTMethod
from speechdistill.methods.gendistiller import GenDistillerMethodConfig
from speechdistill.methods.masked_prediction import MaskedPredictionConfig
from speechdistill.methods.masked_units import MaskedUnitsConfig
from speechdistill.methods.speed import SpeedConfig
from speechdistill.methods.wid import WIDConfig, WIDKDConfig
from speechdistill.models.edge_frontend import FrontEndConfig
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
    # Projection stages before the method's own objective (methods/curriculum.py); none by default.
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    # A cheaper student front end (thin CNN, cheaper positional conv, lower frame rate), for any method.
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not self.data.train_manifest:
            raise ConfigError("data.train_manifest is required (e.g. data.train_manifest=corpus/train.jsonl)")
        if not self.teacher:
            raise ConfigError("teacher is required (a model directory, hub id, builtin:reference or tiny:hubert)")
        if not self.out_dir:
            raise ConfigError("out_dir is required (e.g. out_dir=runs/distill)")
        # Both methods' sections, whichever runs: a recipe should not carry values that cannot work.
        _check_targets("distilhubert.targets", self.distilhubert.targets)
        check_ranges("distilhubert", self.distilhubert, student_layers=">=1", cnn_grad_scale=">=0", cos_weight=">=0")
        g = self.gendistiller
        _check_targets("gendistiller.targets", g.targets)
        check_ranges(
            "gendistiller", g, decoder_hidden_size=">=0", decoder_layers=">=1", decoder_heads=">=1",
            decoder_ffn_dim=">=1", dropout="[0,1)", cnn_grad_scale=">=0", cos_weight=">=0",
            hints={"decoder_hidden_size": "0 = the teacher's width"},
        )
        if g.decoder_hidden_size and g.decoder_hidden_size % g.decoder_heads:
            raise ConfigError(
                f"gendistiller.decoder_hidden_size={g.decoder_hidden_size} is not divisible by "
                f"gendistiller.decoder_heads={g.decoder_heads}"
            )

        if self.method in UNIT_METHODS and not self.masked_prediction.labels:
            raise ConfigError(
                f"method={self.method} needs unit labels: masked_prediction.labels=DIR, made with "
                "`speechdistill units teacher=... manifest=TRAIN_MANIFEST out=DIR` (label the dev manifest too)"
            )

        if self.frontend.changes_front_end and self.method == "distilhubert" and self.distilhubert.student_init:
            raise ConfigError("frontend.* reshapes a front end copied from the teacher; it cannot be combined "
                              "with distilhubert.student_init (that student keeps its own front end)")


def _check_targets(key: str, targets: list[int]) -> None:
    if not targets:
        raise ConfigError(f"{key}: name at least one teacher layer (e.g. [4, 8, 12])")
    if min(targets) < 1 or any(b <= a for a, b in pairwise(targets)):
        raise ConfigError(f"{key}={targets}: teacher layers must be >= 1 and strictly increasing (e.g. [4, 8, 12])")


def build_method(cfg: DistillConfig):
    from speechdistill.methods.frontend import build_front_end
    from speechdistill.models.load import load_teacher

    teacher = load_teacher(cfg.teacher, seed=cfg.train.seed)
    info = {"recipe": to_dict(cfg)}
    section = getattr(cfg, cfg.method, None)
    try:
        if cfg.method == "distilhubert":
            method = DistilHuBERTMethod(teacher, cfg.distilhubert, info)
        elif cfg.method == "wid":
            from speechdistill.methods.wid import WIDMethod

            method = WIDMethod(teacher, cfg.wid, cfg.masked_prediction, info, total_steps=cfg.train.steps)
        elif cfg.method == "wid_kd":
            from speechdistill.methods.wid import WIDKDMethod

            method = WIDKDMethod(teacher, cfg.wid, cfg.wid_kd, info, total_steps=cfg.train.steps)
        elif cfg.method == "masked_units":
            from speechdistill.methods.masked_units import MaskedUnitsMethod

            method = MaskedUnitsMethod(teacher, cfg.masked_units, cfg.masked_prediction, info)
        else:
            from speechdistill.methods.gendistiller import GenDistillerMethod

            method = GenDistillerMethod(teacher, cfg.gendistiller, info, total_steps=cfg.train.steps)
    except ValueError as e:  # targets the teacher does not have
        targets = getattr(section, "targets", None)
        raise ConfigError(f"{cfg.method}{f'.targets={targets}' if targets else ''} with teacher {cfg.teacher}: {e}") from None
    method.speed = cfg.speed
    method.front_end = build_front_end(cfg.frontend, teacher, cfg.data.train_manifest, cfg.train.seed)
    if cfg.curriculum.stages:
        from speechdistill.methods.curriculum import CurriculumMethod

        method = CurriculumMethod(method, cfg.curriculum, cfg.train.steps)
    return method


def check_teacher_cache(cfg: DistillConfig, method) -> None:
    """Print the teacher target cache's storage cost before training starts; refuse it over the limit."""
    from speechdistill.methods.teacher_cache import audio_sizes, estimate_cache

    if not cfg.speed.teacher_cache_dir:
        return
    d = cfg.data
    base = getattr(method, "inner", method)  # a curriculum wraps the method that owns the targets
    n_layers = len(base.fetched_layers()) if hasattr(base, "fetched_layers") else len(base.targets)
    est = estimate_cache(audio_sizes(d.train_manifest, d.min_seconds, d.max_seconds),
                         round(d.crop_seconds * SAMPLE_RATE), method.teacher.config, n_layers,
                         method.teacher.hidden_size)
    log.info("%s", est.describe(n_layers, method.teacher.hidden_size))
    limit = cfg.speed.teacher_cache_max_gb
    if limit and est.bytes_per_epoch > limit * 1e9:
        raise ConfigError(
            f"speed.teacher_cache_dir: an epoch of targets needs {est.bytes_per_epoch / 1e9:.1f} GB, over "
            f"speed.teacher_cache_max_gb={limit}; raise the limit or turn the cache off"
        )


def run_distill(cfg: DistillConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Distill into ``cfg.out_dir``: a used folder needs ``resume`` (continue its run) or ``overwrite``
    (replace it); a folder another run is writing into is refused (``train.run_dir``)."""
    from speechdistill.train.run_dir import claim_run_dir

    for key, m in (("data.train_manifest", cfg.data.train_manifest), ("data.dev_manifest", cfg.data.dev_manifest)):
        if m and not Path(m).is_file():
            raise ConfigError(
                f"{key}={m}: the manifest does not exist; make one with `speechdistill data synth --out DIR` "
                "(synthetic speech) or `speechdistill data librispeech ...`"
            )
    with claim_run_dir(cfg.out_dir, resume, overwrite) as out_dir:
        method = build_method(cfg)
        check_teacher_cache(cfg, method)
        log.info("distilling %s -> %s student into %s", cfg.teacher, cfg.method, out_dir)
        return train(method, cfg.train, cfg.optim, cfg.data, out_dir, resume=resume, run_config=to_dict(cfg))
