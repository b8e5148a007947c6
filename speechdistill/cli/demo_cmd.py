"""``speechdistill demo``: the README's demo command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechdistill.cli.job import Flag, Job, register_job

DESCRIPTION = """\
Run the whole pipeline offline on the embedded default: synthesise a speaker-disjoint digits corpus,
take the shipped reference teacher, distill a GenDistiller and a DistilHuBERT student, fine-tune a
CTC head on each frozen encoder (teacher included), evaluate on held-out speakers and write
OUT/report.md, OUT/report.json and OUT/wer_vs_cost.png. About 15 minutes on 2 CPU cores.
"""

FLAGS = [
    Flag("--out", "out", "output folder", metavar="DIR"),
    Flag("--hours", "hours", "hours of synthetic speech", type=float),
    Flag("--distill-steps", "distill_steps", "optimizer steps per student", type=int),
    Flag("--ctc-steps", "ctc_steps", "optimizer steps per CTC head", type=int),
    Flag("--teacher", "teacher", "teacher: builtin:reference, a model/CTC directory or hub id"),
    Flag("--threads", "threads", "torch CPU threads (0 = torch's default)", type=int),
    Flag("--seed", "seed", "random seed for corpus and training", type=int),
]


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.run.demo import run_demo

    run_demo(cfg)
    # The report itself says whether the numbers are meaningful; the run succeeded either way.
    sys.stdout.write((Path(cfg.out) / "report.md").read_text(encoding="utf-8"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.demo import DemoConfig

    register_job(sub, Job(
        name="demo", help="end-to-end demo: synth corpus -> distill -> CTC -> WER report", description=DESCRIPTION,
        config_cls=DemoConfig, run=run, flags=FLAGS, default_recipe="default",
        recipe_switches={"--quick": ("quick", "smoke run in about a minute (numbers not meaningful)")},
    ))
