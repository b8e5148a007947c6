"""``speechdistill distill RECIPE [key=value ...]``."""

from __future__ import annotations

import argparse
import logging

import yaml

from speechdistill.cli.common import OVERRIDES_HELP, HelpFormatter

log = logging.getLogger(__name__)

DESCRIPTION = """\
Distill a teacher (HuBERT/WavLM/wav2vec 2.0) into a small student with one of the shipped recipes
(`speechdistill recipes` lists them) or your own YAML file.

Single process (CPU or one GPU):
  speechdistill distill tiny_cpu data.train_manifest=corpus/train.jsonl
Several GPUs / nodes (the same command under accelerate):
  accelerate launch --config_file launch/accelerate_8gpu.yaml -m speechdistill distill gendistiller_hubert_base ...

The student is written to OUT_DIR/model (HF-style directory); checkpoints to OUT_DIR/checkpoints;
per-step losses to OUT_DIR/train_log.jsonl. Ctrl-C (SIGINT) or SIGTERM saves a checkpoint; --resume
continues from the latest one with the same data position, optimizer, scheduler and RNG state.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distill a teacher into a student (GenDistiller, DistilHuBERT)",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("recipe", help="shipped recipe name or path to a YAML recipe")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from speechdistill.config import load_config, to_dict
    from speechdistill.distill import DistillConfig, run_distill

    cfg = load_config(DistillConfig, args.recipe, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    result = run_distill(cfg, resume=args.resume)
    if result.interrupted:
        return 130
    log.info("student written to %s", result.artifact)
    return 0
