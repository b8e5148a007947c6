"""``speechdistill demo``: the README's demo command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechdistill.cli.job import Flag, Job, register_job

DESCRIPTION = """\
Run the whole pipeline offline on the embedded default: synthesise a speaker-disjoint digits corpus,
take the shipped reference teacher, distill a GenDistiller and a DistilHuBERT student, then compare the
three frozen encoders with `speechdistill compare` (the same CTC head on each, WER on 400 utterances of
8 held-out voices, layer fidelity to the teacher, cost) and write OUT/report.md, OUT/report.json and
the Pareto plots in OUT/compare/. About 15 minutes on 2 CPU cores.
"""

FLAGS = [
    Flag("--out", "out", "output folder", metavar="DIR"),
    Flag("--hours", "hours", "hours of synthetic speech", type=float),
    Flag("--distill-steps", "distill_steps", "optimizer steps per student", type=int),
    Flag("--ctc-steps", "ctc_steps", "most steps per ASR head (it stops early on dev WER)", type=int),
    Flag("--teacher", "teacher", "teacher: builtin:reference, a model/CTC directory or hub id"),
    Flag("--threads", "threads", "torch CPU threads (0 = torch's default)", type=int),
    Flag("--seed", "seed", "random seed for corpus and training", type=int),
    Flag("--eval-seeds", "eval_seeds", "seeds per ASR head in the evaluation (the full protocol uses 3)", type=int),
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
