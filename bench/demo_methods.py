#!/usr/bin/env python
"""Every distillation method at demo scale, scored with ``speechdistill compare`` (3 head seeds, paired CIs).

One teacher (the shipped ``builtin:reference`` by default), one synthetic-digits corpus with held-out test voices,
every student distilled for the same number of steps from its shipped demo-scale recipe, then one comparison:

  teacher        the frozen teacher itself
  distilhubert   DistilHuBERT as ``speechdistill demo`` trains it (tiny_cpu recipe, targets 2 and 4, teacher-copied layer)
  gendistiller   GenDistiller as the demo trains it (the demo's block settings, <= 67 % of DistilHuBERT's parameters)
  gendistiller-k4  the same GenDistiller generating teacher layers 1-4 (4 steps of the one block, not 2)
  edge           the ``edge_demo`` recipe: thin CNN (16 of 64 channels), depthwise positional conv, 25 Hz body
  edge-off       ``edge_demo`` with every front-end switch off (the teacher's front end): the ablation's base
  edge-cnn / edge-pos / edge-rate   ``edge_demo`` with only that one front-end change (the cost of each)
  edge-cnnpos    ``edge_demo`` without its 25 Hz body (thin CNN + depthwise positional conv)
  wid            ``wid_reference``: compactors on the whole teacher, masked prediction of teacher units (faithful WID)
  wid_kd         ``wid_kd_reference``: the same compactors, layer-distillation loss
  masked_units   ``masked_units_reference``: a plain 4 x 112 student trained on masked prediction of the units

Units for ``wid`` / ``masked_units`` come from ``speechdistill units reference_demo`` on the corpus (fitted on
train, dev labelled with the same k-means), made here if missing.  The comparison is the ``compare/digits``
suite, or ``compare/mini_superb`` with ``--fsdd`` (real keyword / speaker tasks) and ``--real-audio`` (layer
fidelity on real speech).  ``ROW@STEPS`` (e.g. ``edge@1200``) distils that row for STEPS steps instead of
``--steps`` (a separate student, compared as its own row).  Every row is paired against ``distilhubert`` (and the reference, the teacher).

Also written: the training cost per optimizer step of each student (process CPU seconds, which other jobs on
the machine do not inflate, and wall seconds), OUT/demo_methods_COMPARE-NAME.{json,md}.  Resumable: finished students,
units and comparison cells are reused; ``--cells-dir`` lets two runs (e.g. two row sets on two cores) share
cells.

  python bench/demo_methods.py --corpus CORPUS --out OUT --rows teacher,distilhubert,gendistiller,edge,edge-cnn,edge-pos,edge-rate
  python bench/demo_methods.py --corpus CORPUS --out OUT2 --rows wid,wid_kd,masked_units,teacher,distilhubert,gendistiller \\
      --students OUT/students --cells-dir OUT/compare/cells --features-dir OUT/compare/features \\
      --fsdd ../shared/data/fsdd --real-audio clips.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from dataclasses import replace
from pathlib import Path

ROWS = ("teacher", "distilhubert", "gendistiller", "gendistiller-k4", "edge", "edge-off", "edge-cnn", "edge-pos", "edge-rate",
        "edge-cnnpos", "wid", "wid_kd", "masked_units")
FRONTEND_OFF = {"conv_channels": 0, "pos_conv_groups": 0, "pos_conv_kernel": 0, "frame_rate_reduction": 1}
EDGE_KEEP = {  # the edge_demo recipe's front-end switches each edge row keeps (the others are off)
    "edge": ("conv_channels", "pos_conv_groups", "pos_conv_kernel", "frame_rate_reduction"),
    "edge-off": (),
    "edge-cnn": ("conv_channels",),
    "edge-pos": ("pos_conv_groups", "pos_conv_kernel"),
    "edge-rate": ("frame_rate_reduction",),
    "edge-cnnpos": ("conv_channels", "pos_conv_groups", "pos_conv_kernel"),
}
UNIT_ROWS = {"wid": "wid_reference", "wid_kd": "wid_kd_reference", "masked_units": "masked_units_reference"}

log = logging.getLogger("bench.demo_methods")


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parse_row(row: str, default_steps: int) -> tuple[str, int]:
    """``ROW`` or ``ROW@STEPS`` -> (base row, distillation steps)."""
    base, _, steps = row.partition("@")
    if steps and not (steps.isdigit() and int(steps) > 0):
        raise ValueError(f"row {row!r}: STEPS after '@' must be a positive integer")
    return base, int(steps) if steps else default_steps


def student_config(row: str, args, manifests: dict, units: Path, out: Path):
    """The DistillConfig of one row: its shipped recipe, this corpus, its step count and the common seed."""
    from speechdistill.config import load_config
    from speechdistill.run.demo import DEMO_GENDISTILLER
    from speechdistill.run.distill import DistillConfig

    row, steps = parse_row(row, args.steps)
    if row in ("distilhubert", "gendistiller", "gendistiller-k4"):
        cfg = load_config(DistillConfig, "tiny_cpu", command="distill", validate=False)
        gen_targets = [1, 2, 3, 4] if row == "gendistiller-k4" else [2, 4]
        cfg = replace(cfg, method=row.split("-")[0], optim=replace(cfg.optim, lr=1e-3),
                      distilhubert=replace(cfg.distilhubert, targets=[2, 4]),
                      gendistiller=replace(cfg.gendistiller, targets=gen_targets, **DEMO_GENDISTILLER))
    elif row in EDGE_KEEP:
        cfg = load_config(DistillConfig, "edge_demo", command="distill", validate=False)
        keep = EDGE_KEEP[row]
        cfg = replace(cfg, frontend=replace(cfg.frontend, **{k: v for k, v in FRONTEND_OFF.items() if k not in keep}))
    else:
        cfg = load_config(DistillConfig, UNIT_ROWS[row], command="distill", validate=False)
        cfg = replace(cfg, masked_prediction=replace(cfg.masked_prediction, labels=str(units / "train"),
                                                     dev_labels=str(units / "dev")))
    return replace(
        cfg, teacher=args.teacher, out_dir=str(out),
        data=replace(cfg.data, train_manifest=manifests["train"], dev_manifest=manifests["dev"]),
        train=replace(cfg.train, steps=steps, seed=args.seed, val_every=max(steps // 3, 1),
                      save_every=max(steps // 2, 1), progress=False),
    )


def distill(row: str, args, manifests: dict, units: Path, out: Path) -> dict:
    """Distil one row (skipped when its model and cost record exist); returns its training-cost record."""
    from speechdistill.config import validated
    from speechdistill.run.distill import run_distill

    cost_file = out / "bench_cost.json"
    if (out / "model" / "config.json").is_file() and cost_file.is_file():
        return json.loads(cost_file.read_text())
    cfg = validated(student_config(row, args, manifests, units, out))
    log.info("distilling %s (%d steps) into %s", row, cfg.train.steps, out)
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    run_distill(cfg, overwrite=True)
    cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
    summary = json.loads((out / "train_summary.json").read_text())
    cost = {"row": row, "method": cfg.method, "steps": summary["step"], "wall_seconds": wall,
            "cpu_seconds_per_step": cpu / summary["step"],
            "train_seconds_per_step": summary["train_seconds"] / summary["step"],
            "final": summary["metrics"]}
    cost_file.write_text(json.dumps(cost, indent=2))
    return cost


def make_units(args, manifests: dict, units: Path) -> None:
    from speechdistill.config import load_config, validated
    from speechdistill.run.units import UnitsConfig, run_units

    for split, kmeans in (("train", ""), ("dev", str(units / "train"))):
        cfg = load_config(UnitsConfig, "reference_demo", command="units", validate=False)
        cfg = replace(cfg, teacher=args.teacher, manifest=manifests[split], out=str(units / split), kmeans=kmeans,
                      progress=False)
        run_units(validated(cfg))  # resumable: finished shards are kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="synthetic digits corpus (train/dev/test.jsonl; test voices unseen)")
    ap.add_argument("--out", default="bench/out/demo_methods", help="output folder")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma list (order = order of work) of " + ", ".join(ROWS))
    ap.add_argument("--teacher", default="builtin:reference", help="teacher (builtin:NAME or a directory)")
    ap.add_argument("--steps", type=int, default=400, help="distillation steps, every student")
    ap.add_argument("--seed", type=int, default=0, help="distillation seed")
    ap.add_argument("--seeds", type=int, default=3, help="head seeds per comparison cell")
    ap.add_argument("--ctc-head", choices=["bilstm", "linear"], default="bilstm",
                    help="ASR head on the frozen encoder (bilstm: the compare recipes' SUPERB-style head)")
    ap.add_argument("--ctc-lr", type=float, default=0.0, help="ASR head learning rate (0 = the recipe's)")
    ap.add_argument("--ctc-steps", type=int, default=400, help="most steps per ASR head (early stopping on dev WER)")
    ap.add_argument("--ctc-val-every", type=int, default=50, help="ASR head validation interval (steps)")
    ap.add_argument("--ctc-patience", type=int, default=3, help="validations without a better dev WER before stopping")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--pairs", default="", help="extra paired differences, comma list of ROW:BASELINE "
                    "(e.g. gendistiller@1200:distilhubert@1200); every row is paired against distilhubert anyway")
    ap.add_argument("--fsdd", help="FSDD folder (recordings/*.wav): adds real keyword and speaker tasks")
    ap.add_argument("--real-audio", help="manifest of real unlabelled speech: adds layer fidelity on it")
    ap.add_argument("--students", default="", help="students folder (one subfolder per row; default OUT/students)")
    ap.add_argument("--units", default="", help="unit labels folder (train/, dev/; made if missing; default OUT/units)")
    ap.add_argument("--compare-name", default="compare", help="subfolder of OUT for the comparison (one per head setting)")
    ap.add_argument("--cells-dir", default="", help="finished comparison cells (shared between runs; default OUT/compare/cells)")
    ap.add_argument("--features-dir", default="", help="feature cache (default OUT/compare/features)")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")  # before transformers is imported: it reads its progress-bar switch then
    import torch

    torch.set_num_threads(args.threads)
    from speechdistill.config import load_config, validated
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.run.compare import CompareConfig, run_compare

    rows = [r for r in args.rows.split(",") if r]
    try:
        base_rows = {r: parse_row(r, args.steps)[0] for r in rows}
    except ValueError as e:
        ap.error(str(e))
    unknown = [r for r, base in base_rows.items() if base not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    out, corpus = Path(args.out), Path(args.corpus)
    manifests = {s: str(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
    missing = [m for m in manifests.values() if not Path(m).is_file()]
    if missing:
        ap.error(f"--corpus {corpus}: missing {', '.join(missing)} (make one with `speechdistill data synth`)")
    units = Path(args.units) if args.units else out / "units"
    if any(base in UNIT_ROWS for base in base_rows.values()):
        make_units(args, manifests, units)
    students = Path(args.students) if args.students else out / "students"
    models, costs = {}, {}
    for row in rows:
        if row == "teacher":
            models[row] = str(resolve_model_path(args.teacher))
            continue
        costs[row] = distill(row, args, manifests, units, students / row)
        models[row] = str(students / row / "model")

    data = {"corpus": str(corpus)}
    recipe, only = "digits", []
    if args.fsdd:
        from speechdistill.data.labelled import LabelledFolderConfig, parse_text_map, write_labelled_manifests

        labelled = out / "fsdd"
        if not (labelled / "speakers").is_dir():
            write_labelled_manifests(LabelledFolderConfig(
                root=str(Path(args.fsdd) / "recordings"), out=str(labelled), text_map=parse_text_map("digits"),
                test_speakers=["theo"], dev_speakers=["nicolas"]))
        recipe, data["labelled"] = "mini_superb", str(labelled)
        if args.real_audio:
            data["real_audio"] = args.real_audio
        else:
            only = ["asr", "ks_speakers", "ks_takes", "sid_takes", "fidelity", "cost"]
    base = load_config(CompareConfig, recipe, command="compare", validate=False)
    asr = replace(base.asr, head=replace(base.asr.head, head=args.ctc_head), max_steps=args.ctc_steps,
                  val_every=args.ctc_val_every, patience=args.ctc_patience,
                  optim=replace(base.asr.optim, lr=args.ctc_lr or base.asr.optim.lr))
    reference = "teacher" if "teacher" in models else next(iter(models))
    pairs = [f"{r}:distilhubert" for r in models if "distilhubert" in models and r not in ("distilhubert", reference)]
    pairs += [p for p in args.pairs.split(",") if p and p not in pairs]
    ccfg = replace(
        base, out=str(out / args.compare_name), models=[f"{k}={v}" for k, v in models.items()], reference=reference,
        teacher=reference if "teacher" in models else "", pairs=pairs, data=data, only_tasks=only, seeds=args.seeds,
        asr=asr, threads=args.threads, cells_dir=args.cells_dir,
        features=replace(base.features, cache_dir=args.features_dir or str(out / "compare" / "features")),
        title=f"Every method at demo scale: {args.steps} distillation steps per student, {args.seeds} head seeds",
    )
    run_compare(validated(ccfg))

    lines = ["| row | method | steps | distill CPU s / step | distill wall s / step |", "|---|---|---|---|---|"]
    for row, c in costs.items():
        lines.append(f"| {row} | {c['method']} | {c['steps']} | {c['cpu_seconds_per_step']:.3f} | "
                     f"{c['train_seconds_per_step']:.3f} |")
    md = (out / args.compare_name / "compare.md").read_text() + "\n\n## Training cost per step\n\n" + "\n".join(lines) + "\n"
    (out / f"demo_methods_{args.compare_name}.md").write_text(md)
    (out / f"demo_methods_{args.compare_name}.json").write_text(json.dumps({"args": vars(args), "models": models, "costs": costs}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
