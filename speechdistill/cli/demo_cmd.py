"""``speechdistill demo``: the README's demo command."""

from __future__ import annotations

import argparse
from pathlib import Path

from speechdistill.cli.common import HelpFormatter

DESCRIPTION = """\
Run the whole pipeline offline on the embedded default: synthesise a speaker-disjoint digits corpus,
take the shipped reference teacher, distill a GenDistiller and a DistilHuBERT student, fine-tune a
CTC head on each frozen encoder (teacher included), evaluate on held-out speakers and write
OUT/report.md, OUT/report.json and OUT/wer_vs_params.png. About 15 minutes on 2 CPU cores.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo: synth corpus -> distill -> CTC -> WER report",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--quick", action="store_true", help="smoke run in about a minute (numbers not meaningful)")
    p.add_argument("--hours", type=float, help="hours of synthetic speech (default 0.3; quick 0.02)")
    p.add_argument("--distill-steps", type=int, help="optimizer steps per student (default 300)")
    p.add_argument("--ctc-steps", type=int, help="optimizer steps per CTC head (default 300)")
    p.add_argument("--teacher", help="teacher: builtin:reference (default), a model/CTC directory or hub id")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0, help="random seed for corpus and training")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from speechdistill.demo import DemoConfig, run_demo

    cfg = DemoConfig.quick_mode(args.out) if args.quick else DemoConfig(out=args.out)
    for key in ("hours", "distill_steps", "ctc_steps", "teacher"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.threads, cfg.seed = args.threads, args.seed
    run_demo(cfg)
    # The report itself says whether the numbers are meaningful; the run succeeded either way.
    print((Path(cfg.out) / "report.md").read_text())
    return 0
