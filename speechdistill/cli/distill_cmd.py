"""``speechdistill distill RECIPE [key=value ...]``."""

from __future__ import annotations

import argparse
import logging

from speechdistill.cli.job import Job, register_job

log = logging.getLogger(__name__)

DESCRIPTION = """\
Distill a teacher (HuBERT/WavLM/wav2vec 2.0) into a small student with one of the shipped recipes
or your own YAML file.

Single process (CPU or one GPU):
  speechdistill data synth --out data/synth --hours 0.2 --text digits    # the corpus tiny_cpu reads
  speechdistill distill tiny_cpu
  speechdistill distill tiny_cpu data.train_manifest=data/synth/train.jsonl data.dev_manifest=null out_dir=runs/mine
(the last line: any training manifest, no dev set, its own output folder; tiny_cpu reads data/synth/{train,dev}.jsonl)
Several GPUs / nodes (the same command under accelerate):
  accelerate launch --config_file launch/accelerate_8gpu.yaml -m speechdistill distill gendistiller_hubert_base ...

Methods: gendistiller, distilhubert, wid (weight-inherited: compactors + masked unit prediction),
wid_kd (compactors + layer loss), masked_units (a plain student on the teacher's units). wid and
masked_units need unit labels from `speechdistill units` (masked_prediction.labels / dev_labels).

The student is written to OUT_DIR/model (HF-style directory); checkpoints to OUT_DIR/checkpoints;
per-step losses to OUT_DIR/train_log.jsonl. Ctrl-C (SIGINT) or SIGTERM saves a checkpoint; --resume
continues from the latest one with the same data position, optimizer, scheduler and RNG state.
"""


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.run.distill import run_distill

    result = run_distill(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.interrupted:
        return 130
    log.info("student written to %s", result.artifact)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.distill import DistillConfig

    register_job(sub, Job(
        name="distill", help="distill a teacher into a student (GenDistiller, DistilHuBERT, WID, masked units)",
        description=DESCRIPTION, config_cls=DistillConfig, run=run, resumable=True,
    ))
