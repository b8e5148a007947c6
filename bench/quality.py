#!/usr/bin/env python
"""Quality benchmark: the demo pipeline at a configurable size, then `speechdistill compare` on its teacher
and students, optionally with real speech (a mini-SUPERB).

  python bench/quality.py --out bench/out/quality --hours 1 --distill-steps 1000
  python bench/quality.py ... --fsdd ../shared/data/fsdd --real-audio clips.jsonl --int8 distilhubert
  python bench/quality.py --out bench/out/real --teacher runs/real_teacher/model --corpus demo_out/corpus \
      --distill-train train.jsonl --distill-dev dev.jsonl --fsdd ../shared/data/fsdd ...   # students of another teacher

The synthetic part is exactly `speechdistill demo` with larger settings (its evaluation is `speechdistill
compare` with --seeds seeds: OUT/report.md, OUT/compare/). With --fsdd, the FSDD recordings become keyword
and speaker manifests (`speechdistill data labelled-folder`: held-out speakers and held-out takes) and the
recipe compare/mini_superb scores every model on synthetic ASR, real KS and SID, layer fidelity (synthetic
test set, plus --real-audio) and cost: OUT/superb/compare.md, compare.json and the Pareto plots.
--int8 NAME adds the ONNX int8 export of that model as its own row (the file that ships, scored as such),
paired with its PyTorch source. --distill-train/--distill-dev distil the students on that audio (e.g. the
teacher's own training mix) with the demo's settings instead of running the demo; --corpus then names the
synthetic corpus for ASR.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/quality", help="output folder")
    ap.add_argument("--hours", type=float, default=1.0, help="hours of synthetic digits (train + dev)")
    ap.add_argument("--distill-steps", type=int, default=1000, help="steps per student")
    ap.add_argument("--ctc-steps", type=int, default=500, help="most steps per ASR head (early stopping on dev)")
    ap.add_argument("--teacher", default="builtin:reference", help="teacher (builtin:reference, a directory)")
    ap.add_argument("--seed", type=int, default=0, help="seed of corpus and distillation")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per trained cell in the comparisons")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--fsdd", help="FSDD folder (recordings/*.wav): real keyword and speaker tasks")
    ap.add_argument("--fsdd-test-speakers", default="theo", help="held-out FSDD speakers (comma-separated)")
    ap.add_argument("--fsdd-dev-speakers", default="nicolas", help="FSDD dev speakers (comma-separated)")
    ap.add_argument("--real-audio", help="manifest of real unlabelled speech for layer fidelity")
    ap.add_argument("--int8", default="", help="also score this model's ONNX int8 export (a model name)")
    ap.add_argument("--skip-synthetic", action="store_true", help="reuse OUT's distilled students")
    ap.add_argument("--distill-train", help="distil the students on this manifest (no demo run)")
    ap.add_argument("--distill-dev", help="dev manifest for --distill-train")
    ap.add_argument("--corpus", help="synthetic corpus (train/dev/test.jsonl) for ASR (default: OUT/corpus)")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")  # before transformers is imported: it reads its progress-bar switch then
    from speechdistill.config import load_config, validated
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.run.compare import CompareConfig, run_compare
    from speechdistill.run.demo import DemoConfig, compare_config, run_demo

    log = logging.getLogger("bench.quality")
    out = Path(args.out)
    cfg = replace(load_config(DemoConfig, "default", command="demo"), out=str(out), hours=args.hours, seed=args.seed,
                  teacher=args.teacher, distill_steps=args.distill_steps, ctc_steps=args.ctc_steps,
                  threads=args.threads, eval_seeds=args.seeds)
    if args.distill_train:
        from speechdistill.models.load import load_encoder
        from speechdistill.run.demo import _distill

        layers = load_encoder(resolve_model_path(args.teacher)).num_output_layers
        manifests = {"train": args.distill_train, "dev": args.distill_dev}
        for method in ("gendistiller", "distilhubert"):
            if not (out / method / "model").is_dir():
                _distill(cfg, method, manifests, out / method, layers)
    elif not args.skip_synthetic:
        run_demo(cfg)
        print((out / "report.md").read_text())
    if not args.fsdd:
        return

    from speechdistill.data.labelled import LabelledFolderConfig, parse_text_map, write_labelled_manifests

    labelled = out / "fsdd"
    write_labelled_manifests(LabelledFolderConfig(
        root=str(Path(args.fsdd) / "recordings"), out=str(labelled), text_map=parse_text_map("digits"),
        test_speakers=args.fsdd_test_speakers.split(","), dev_speakers=args.fsdd_dev_speakers.split(",")))
    models = {"teacher": resolve_model_path(args.teacher), "gendistiller": str(out / "gendistiller" / "model"),
              "distilhubert": str(out / "distilhubert" / "model")}
    if args.int8:
        from speechdistill.export.onnx_export import OnnxExportOptions, export_onnx

        onnx_dir = out / f"{args.int8}_onnx"
        log.info("exporting %s to ONNX int8", args.int8)
        export_onnx(models[args.int8], onnx_dir, OnnxExportOptions(outputs="all", int8=True))
        models[f"{args.int8}_int8"] = str(onnx_dir / "model.int8.onnx")
        pairs = [f"{args.int8}_int8:{args.int8}"]
    else:
        pairs = []
    corpus = Path(args.corpus) if args.corpus else out / "corpus"
    data = {"corpus": str(corpus), "labelled": str(labelled)}
    overrides = []
    if args.real_audio:
        data["real_audio"] = args.real_audio
    else:
        overrides.append("only_tasks=[asr,ks_speakers,ks_takes,sid_takes,fidelity,cost]")
    base = load_config(CompareConfig, "mini_superb", overrides, command="compare", validate=False)
    # The demo's own comparison (OUT/compare) used the same ASR heads and fidelity settings: sharing its cells
    # and features, the mini-SUPERB computes only what the demo did not.
    demo = compare_config(cfg, models, corpus, out / "compare")
    ccfg = replace(base, out=str(out / "superb"), models=[f"{k}={v}" for k, v in models.items()], reference="teacher",
                   pairs=pairs, data=data, seeds=args.seeds, asr=demo.asr,
                   cost=replace(demo.cost, isolate=True, repeats=5),  # memory needs a fresh process per model
                   cells_dir=str(out / "compare" / "cells"),
                   features=replace(base.features, cache_dir=str(out / "compare" / "features")))
    run_compare(validated(ccfg))
    print((out / "superb" / "compare.md").read_text())


if __name__ == "__main__":
    main()
