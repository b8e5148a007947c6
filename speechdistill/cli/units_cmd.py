"""``speechdistill units [RECIPE] [key=value ...]``."""

from __future__ import annotations

import argparse
import logging

from speechdistill.cli.job import Flag, Job, register_job

log = logging.getLogger(__name__)

DESCRIPTION = """\
K-means units of a teacher layer and unit labels for a manifest: the targets of HuBERT-style masked
prediction (`speechdistill distill` with method=wid or method=masked_units, masked_prediction.labels=OUT).

  speechdistill units hubert_base_l9_k500 manifest=manifests/ls960.jsonl out=units/ls960_l9_k500
  speechdistill units reference_demo manifest=corpus/train.jsonl out=units/demo

Fits scikit-learn MiniBatchKMeans on the teacher's features (or reuses kmeans=DIR, or the model OUT
already holds), then writes one label per teacher frame for every utterance into OUT (safetensors
shards + units.json). Interrupted? Rerun the same command: it continues after the last shard.
"""


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.run.units import run_units

    summary = run_units(cfg)
    if cfg.fit_only:
        log.info("k-means model written to %s", summary["out"])
        return 0
    return 0 if summary["complete"] else 130


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.units import UnitsConfig

    register_job(sub, Job(
        name="units", help="k-means units of a teacher layer and unit labels for a manifest",
        description=DESCRIPTION, config_cls=UnitsConfig, run=run,
        flags=[
            Flag("--teacher", "teacher", "teacher encoder (directory, hub id, builtin:reference)", metavar="SPEC"),
            Flag("--layer", "layer", "teacher layer to cluster", type=int, metavar="N"),
            Flag("--manifest", "manifest", "manifest to label", metavar="MANIFEST"),
            Flag("--out", "out", "output folder (k-means model and labels)", metavar="DIR"),
            Flag("--kmeans", "kmeans", "label with this k-means folder instead of fitting one", metavar="DIR"),
            Flag("--k", "k", "number of clusters", type=int, metavar="K"),
        ],
    ))
