"""``speechdistill study``: train large, then compress: sizes x budget x compression sweep -> the frontier."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechdistill.cli.job import Flag, Job, register_job

log = logging.getLogger(__name__)

DESCRIPTION = """\
Train large, then compress (Li et al., ICML 2020): does a larger model trained for fewer steps, then
compressed, beat a smaller model trained for longer, at equal inference cost?

Trains every size of the recipe from scratch (character CTC on a random HuBERT-architecture encoder)
under the same training budget (FLOPs or wall seconds), compresses each one (STAT at several MAC budgets
with and without CNN pruning, magnitude pruning, ONNX int8, pruned-then-int8, DistilHuBERT into one
student shape), scores every model with the compare command's protocol (frozen encoder, the same ASR
head, N seeds, 95 % CIs on held-out voices; params, MB on disk, MACs, CPU RTF) and draws the frontier:
OUT/study_vs_macs.png, OUT/study_vs_rtf.png, OUT/study.md (Pareto fronts, the equal-cost answer),
OUT/study.json.  Resumable: rerunning the same command reuses every finished model (OUT/study_state.json)
and every finished comparison cell; an interrupted training run continues from its checkpoint.

Examples:
  speechdistill data synth --out corpora/digits --hours 1 --text digits --test-utterances 400 --test-speakers 8
  speechdistill study cpu_digits --corpus corpora/digits --out runs/study
  speechdistill study smoke --corpus corpora/digits --out runs/study_smoke      # plumbing, minutes
  accelerate launch -m speechdistill study gpu_librispeech --corpus corpora/ls --out runs/study_gpu
"""

FLAGS = [
    Flag("--corpus", "corpus", "folder with train/dev/test.jsonl (test on held-out voices)", metavar="DIR"),
    Flag("--out", "out", "output folder (rerun with the same one to continue)", metavar="DIR"),
    Flag("--seeds", "evaluate.seeds", "comparison seeds per cell", type=int, metavar="N"),
    Flag("--budget", "budget.value", "training budget per size (FLOPs or seconds, see budget.kind)", type=float,
         metavar="X"),
    Flag("--title", "title", "title of the report and plots", metavar="TEXT"),
]


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.run.study import StudyInterrupted, run_study

    try:
        run_study(cfg)
    except StudyInterrupted as e:
        log.warning("%s; rerun the same command to continue (finished models and cells are kept)", e)
        return 130
    sys.stdout.write((Path(cfg.out) / "study.md").read_text(encoding="utf-8"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.study import StudyConfig

    register_job(sub, Job(
        name="study", help="train large, then compress: sizes under one budget, a compression sweep, the frontier",
        description=DESCRIPTION, config_cls=StudyConfig, run=run, flags=FLAGS, default_recipe="cpu_digits",
        recipe_switches={"--smoke": ("smoke", "a fast plumbing run (numbers not meaningful)")},
    ))
