"""``speechdistill compare``: a mini-SUPERB table and Pareto plots over any set of encoders."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechdistill.cli.job import Flag, Job, comma_list, register_job

log = logging.getLogger(__name__)

DESCRIPTION = """\
Score encoders the SUPERB way: frozen, a learnable weighted sum of their layers, the same small head for
every encoder, several tasks (ASR WER/CER, keyword spotting and speaker identification accuracy, layer
fidelity to a teacher, cost: params, MACs, CPU RTF, peak memory), N seeds, 95 % CIs and paired differences
against a reference row. Writes OUT/compare.json, OUT/compare.md, OUT/score_vs_macs.png, OUT/score_vs_rtf.png.
Rerunning the same command reuses every finished cell (an interrupted run continues where it stopped).

Models: NAME=SPEC, SPEC = a model or CTC model directory, builtin:NAME, a hub id, or an exported .onnx
file (`speechdistill export --outputs all`, fp32 or int8: the file you ship is the file scored).

Examples:
  speechdistill data synth --out corpora/digits --hours 0.5 --text digits --test-utterances 400 --test-speakers 8
  speechdistill compare digits --corpus corpora/digits --out runs/cmp \\
      --models teacher=builtin:reference,gen=runs/gen/model,dh=runs/dh/model
  speechdistill compare mini_superb --corpus corpora/digits --labelled corpora/fsdd --real-audio clips.jsonl \\
      --models ... --out runs/superb
  speechdistill compare digits ... --tasks asr,cost --seeds 1        # a subset, one seed
"""

FLAGS = [
    Flag("--models", "models", "comma-separated NAME=SPEC (or SPEC) rows", type=comma_list, metavar="LIST"),
    Flag("--tasks", "only_tasks", "run only these tasks of the suite (comma-separated names)", type=comma_list,
         metavar="NAMES"),
    Flag("--out", "out", "output folder", metavar="DIR"),
    Flag("--seeds", "seeds", "seeds per trained cell", type=int, metavar="N"),
    Flag("--reference", "reference", "row that differences are measured against; empty: the first model",
         metavar="NAME"),
    Flag("--pairs", "pairs", "more paired differences ROW:OTHER (e.g. gen_int8:gen)", type=comma_list,
         metavar="LIST"),
    Flag("--teacher", "teacher", "layer-fidelity teacher: a row name or a spec; empty: the reference row",
         metavar="NAME|SPEC"),
    Flag("--corpus", "data.corpus", "folder with train/dev/test.jsonl (e.g. `speechdistill data synth`)", metavar="DIR"),
    Flag("--labelled", "data.labelled", "output folder of `speechdistill data labelled-folder` (KS/SID)",
         metavar="DIR"),
    Flag("--real-audio", "data.real_audio", "manifest of real unlabelled speech (layer fidelity)", metavar="MANIFEST"),
    Flag("--threads", "cost.threads", "CPU threads for the RTF measurement", type=int, metavar="N"),
    Flag("--title", "title", "title of the report and plots", metavar="TEXT"),
]


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.evaluation.tasks import SuiteInterrupted
    from speechdistill.run.compare import run_compare

    try:
        run_compare(cfg)
    except SuiteInterrupted as e:
        log.warning("stopped during %s; rerun the same command to continue (finished cells are kept)", e)
        return 130
    sys.stdout.write((Path(cfg.out) / "compare.md").read_text(encoding="utf-8"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.compare import CompareConfig

    register_job(sub, Job(
        name="compare", help="mini-SUPERB over encoders: tasks x seeds, CIs, cost, Pareto plots",
        description=DESCRIPTION, config_cls=CompareConfig, run=run, flags=FLAGS, default_recipe="digits",
        recipe_switches={"--smoke": ("smoke", "a fast plumbing run on the digits suite (numbers not meaningful)")},
    ))
