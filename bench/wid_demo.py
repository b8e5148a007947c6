#!/usr/bin/env python
"""Demo-scale WID benchmark: WID (units), WID-KD and masked-unit prediction on a plain student against
DistilHuBERT (and GenDistiller), from the shipped reference teacher, one seed.

  speechdistill data synth --out CORPUS --hours 0.3 --seed 0 --text digits
  speechdistill units reference_demo manifest=CORPUS/train.jsonl out=UNITS/demo_train
  speechdistill units reference_demo manifest=CORPUS/dev.jsonl out=UNITS/demo_dev kmeans=UNITS/demo_train
  python bench/wid_demo.py --corpus CORPUS --units UNITS --out OUT --seed 0

Each student is distilled with its shipped demo-scale recipe (``wid_reference``, ``wid_kd_reference``,
``masked_units_reference``; DistilHuBERT and GenDistiller as in ``speechdistill demo``), all for the same
number of steps; then the demo's CTC head (``finetune-ctc demo_head``) is trained on each frozen encoder
(the teacher's too) and evaluated on dev and test.  Training cost per step is the distillation run's CPU
time per optimizer step (process CPU time: robust to other jobs sharing the machine) and wall time.
Students already in OUT are reused (delete a folder to redo it).  Writes OUT/wid_demo.{json,md}.
This is one seed: the multi-seed comparison with confidence intervals is ``speechdistill compare``'s job.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

RECIPES = {
    "wid": ("wid_reference", []),
    "wid_kd": ("wid_kd_reference", []),
    "masked_units": ("masked_units_reference", []),
    # As `speechdistill demo` trains them (tiny_cpu recipe, the demo's distill lr), targets 2 and 4.
    "distilhubert": ("tiny_cpu", ["method=distilhubert", "distilhubert.targets=[2,4]", "optim.lr=1e-3"]),
    "gendistiller": ("tiny_cpu", ["method=gendistiller", "gendistiller.targets=[2,4]", "optim.lr=1e-3"]),
}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def distill(method: str, args, out: Path) -> dict:
    from speechdistill.config import load_config
    from speechdistill.run.distill import DistillConfig, run_distill

    recipe, extra = RECIPES[method]
    corpus, units = Path(args.corpus), Path(args.units)
    overrides = [
        f"teacher={args.teacher}", f"out_dir={out}", f"data.train_manifest={corpus / 'train.jsonl'}",
        f"data.dev_manifest={corpus / 'dev.jsonl'}", f"train.steps={args.steps}", f"train.seed={args.seed}",
        "train.val_every=0", "train.save_every=0", "train.progress=false",
        f"masked_prediction.labels={units / 'demo_train'}", f"masked_prediction.dev_labels={units / 'demo_dev'}",
        *extra,
    ]
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    run_distill(load_config(DistillConfig, recipe, overrides, command="distill"))
    cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
    summary = json.loads((out / "train_summary.json").read_text())
    cost = {"recipe": recipe, "overrides": overrides, "steps": summary["step"],
            "cpu_seconds_per_step": cpu / summary["step"], "train_seconds_per_step": summary["train_seconds"] / summary["step"],
            "wall_seconds_total": wall, "final_dev": {k: v for k, v in summary["metrics"].items() if k.startswith("dev_")}}
    (out / "bench_cost.json").write_text(json.dumps(cost, indent=2))
    return cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="synthetic digits corpus (train/dev/test.jsonl)")
    ap.add_argument("--units", required=True, help="folder with demo_train/ and demo_dev/ unit labels")
    ap.add_argument("--out", default="bench/out/wid_demo", help="output folder")
    ap.add_argument("--teacher", default="builtin:reference")
    ap.add_argument("--methods", default="wid,wid_kd,masked_units,distilhubert", help="comma-separated students")
    ap.add_argument("--steps", type=int, default=600, help="distillation steps (every student)")
    ap.add_argument("--ctc-steps", type=int, default=300, help="CTC head steps (the demo's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--no-teacher-row", action="store_true", help="skip the frozen-teacher CTC row")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")  # before transformers is imported: it reads its progress-bar switch then
    import torch

    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.models.load import load_encoder
    from speechdistill.models.size import student_parameters
    from speechdistill.report.stats import count_macs
    from speechdistill.run.demo import DemoConfig, _finetune

    torch.set_num_threads(args.threads)
    log = logging.getLogger("bench.wid_demo")
    out = Path(args.out)
    corpus = Path(args.corpus)
    manifests = {s: str(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
    demo = DemoConfig(out=str(out), seed=args.seed, teacher=args.teacher, ctc_steps=args.ctc_steps,
                      threads=args.threads)
    encoders = {} if args.no_teacher_row else {"teacher": (resolve_model_path(args.teacher), None)}
    for method in [m for m in args.methods.split(",") if m]:
        d = out / method
        if (d / "model" / "config.json").is_file() and (d / "bench_cost.json").is_file():
            log.info("reusing %s", d / "model")
            cost = json.loads((d / "bench_cost.json").read_text())
        else:
            log.info("distilling %s (%d steps)", method, args.steps)
            cost = distill(method, args, d)
        encoders[method] = (str(d / "model"), cost)
    rows = []
    for name, (enc_dir, cost) in encoders.items():
        ctc_dir = out / f"ctc_{name}"
        model_dir = ctc_dir / "model"
        if not (model_dir / "ctc_config.json").is_file():
            log.info("CTC head on frozen %s", name)
            model_dir = _finetune(demo, enc_dir, manifests, ctc_dir)
        enc = load_encoder(enc_dir)
        row = {"model": name, "encoder_params": student_parameters(enc_dir).encoder,
               "macs_per_second": count_macs(enc, 1.0)}
        for split in ("dev", "test"):
            rep = evaluate_model(model_dir, manifests[split], out / "eval" / name / split, threads=args.threads)
            row[f"{split}_wer"], row[f"{split}_cer"] = rep["wer"], rep["cer"]
            row[f"{split}_utterances"] = rep["num_utterances"]
        if cost:
            row.update({k: cost[k] for k in ("cpu_seconds_per_step", "train_seconds_per_step", "steps")})
            row["distill_dev"] = cost["final_dev"]
        rows.append(row)
    lines = [
        (f"Demo scale, seed {args.seed}: teacher {args.teacher}, {args.steps} distillation steps per student, "
         f"CTC head `demo_head` ({args.ctc_steps} steps) on each frozen encoder; dev {rows[0]['dev_utterances']} / "
         f"test {rows[0]['test_utterances']} utterances (held-out speakers). One seed: differences below a few "
         "WER points are within noise."), "",
        "| model | params (M) | MMACs / s audio | distill CPU s / step | distill wall s / step | dev WER | dev CER | test WER |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = f"{r['cpu_seconds_per_step']:.2f}" if "cpu_seconds_per_step" in r else "-"
        wall = f"{r['train_seconds_per_step']:.2f}" if "train_seconds_per_step" in r else "-"
        lines.append(f"| {r['model']} | {r['encoder_params'] / 1e6:.2f} | {r['macs_per_second'] / 1e6:.1f} | {cpu} | "
                     f"{wall} | {r['dev_wer']:.3f} | {r['dev_cer']:.3f} | {r['test_wer']:.3f} |")
    md = "\n".join(lines)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wid_demo.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    (out / "wid_demo.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
