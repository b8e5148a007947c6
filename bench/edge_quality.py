#!/usr/bin/env python
"""Quality of the edge front ends at demo scale, with seeds: what each front-end change costs in WER.

Teacher: the shipped reference teacher (builtin:reference, HuBERT architecture, CNN 64 channels, 4 layers x
192, trained with CTC on synthetic digits).  Corpus: synthetic digits (``speechdistill data synth``, seed 1234
by default: the teacher's own corpus, whose test speakers it never heard).  Every row is distilled with the
``edge_demo`` recipe (DistilHuBERT, 1 layer; only the front end differs between rows) or, for
``gendistiller``, with the demo's GenDistiller settings; then a CTC head (the demo's BiLSTM head) is trained on
each frozen encoder (teacher included) with the best checkpoint chosen by dev WER, and evaluated on the
held-out test speakers.  Each row runs with every seed (distillation, head and data order all seeded).

Rows:
  teacher        frozen teacher + CTC head
  distilhubert   the teacher's front end (edge_demo with every frontend switch off)
  edge-cnn       + thin CNN only (16 channels of 64, interpolative-decomposition init)
  edge-pos       + depthwise positional conv only
  edge-rate      + 25 Hz body only
  edge           all three (the edge_demo recipe)
  gendistiller   the demo's GenDistiller student

Reported: per row, WER mean and 95 % CI over seeds (t distribution); per row against the teacher and against
distilhubert, the paired difference (same seed, same test utterances) with a 95 % CI from a bootstrap over
utterances and seeds.  The run is resumable: finished stages are skipped.

  python bench/edge_quality.py --out /work/data/edge/quality --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

ROWS = ("teacher", "distilhubert", "edge-cnn", "edge-pos", "edge-rate", "edge", "gendistiller")
FRONTEND_OFF = {"conv_channels": 0, "pos_conv_groups": 0, "pos_conv_kernel": 0, "frame_rate_reduction": 1}
ABLATION = {  # the edge_demo recipe's frontend switches each row keeps (others off)
    "distilhubert": (),
    "edge-cnn": ("conv_channels",),
    "edge-pos": ("pos_conv_groups", "pos_conv_kernel"),
    "edge-rate": ("frame_rate_reduction",),
    "edge": ("conv_channels", "pos_conv_groups", "pos_conv_kernel", "frame_rate_reduction"),
}

log = logging.getLogger("bench.edge_quality")


def distill(row: str, seed: int, manifests: dict, out: Path, args) -> Path:
    from speechdistill.config import load_config, validated
    from speechdistill.run.distill import DistillConfig, run_distill

    model = out / "model"
    if (model / "config.json").is_file():
        return model
    common = {"out_dir": str(out)}
    if row == "gendistiller":
        base = load_config(DistillConfig, "tiny_cpu", command="distill", validate=False)
        cfg = replace(base, method="gendistiller", teacher=args.teacher,
                      gendistiller=replace(base.gendistiller, targets=[2, 4]), **common)
    else:
        base = load_config(DistillConfig, "edge_demo", command="distill", validate=False)
        keep = ABLATION[row]
        fe = replace(base.frontend, **{k: v for k, v in FRONTEND_OFF.items() if k not in keep})
        cfg = replace(base, teacher=args.teacher, frontend=fe, **common)
    cfg = replace(
        cfg,
        data=replace(cfg.data, train_manifest=manifests["train"], dev_manifest=manifests["dev"], max_dev_batches=4,
                     max_batch_seconds=24),
        optim=replace(cfg.optim, lr=1e-3),
        train=replace(cfg.train, steps=args.distill_steps, seed=seed, val_every=0, save_every=0, log_every=50,
                      progress=False),
    )
    run_distill(validated(cfg))
    return model


def finetune(upstream: str, seed: int, manifests: dict, out: Path, args) -> Path:
    from speechdistill.config import load_config, validated
    from speechdistill.run.finetune import FinetuneConfig, run_finetune

    model = out / "model"
    if (model / "ctc_config.json").is_file():
        return model
    base = load_config(FinetuneConfig, "demo_head", command="finetune-ctc", validate=False)
    cfg = replace(
        base, out_dir=str(out), ctc=replace(base.ctc, upstream=upstream),
        data=replace(base.data, train_manifest=manifests["train"], dev_manifest=manifests["dev"],
                     max_dev_batches=args.dev_batches),
        train=replace(base.train, steps=args.ctc_steps, seed=seed, val_every=args.ctc_val_every, log_every=50,
                      progress=False),
    )
    run_finetune(validated(cfg))
    return model


def t95(n: int) -> float:
    return {1: float("nan"), 2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571}.get(n, 1.96)


def mean_ci(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, float("nan")
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, t95(n) * sd / math.sqrt(n)


def paired_bootstrap(a: dict[int, list[dict]], b: dict[int, list[dict]], reps: int = 2000, seed: int = 0):
    """WER(a) - WER(b) and WER(a) / WER(b) with 95 % CIs: utterances resampled (the same ones for a and b) within
    each seed, seeds pooled.  ``a``/``b``: seed -> per-utterance error records (word_errors, ref_words)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seeds = sorted(set(a) & set(b))
    ea = [np.array([u["word_errors"] for u in a[s]], float) for s in seeds]
    eb = [np.array([u["word_errors"] for u in b[s]], float) for s in seeds]
    nw = [np.array([u["ref_words"] for u in a[s]], float) for s in seeds]
    diffs, ratios = [], []
    for _ in range(reps):
        sa = sb = sn = 0.0
        for x, y, n in zip(ea, eb, nw):
            idx = rng.integers(0, len(n), len(n))
            sa += x[idx].sum()
            sb += y[idx].sum()
            sn += n[idx].sum()
        diffs.append((sa - sb) / sn)
        ratios.append(sa / max(sb, 1e-9))
    point_a = sum(x.sum() for x in ea) / sum(n.sum() for n in nw)
    point_b = sum(y.sum() for y in eb) / sum(n.sum() for n in nw)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    rlo, rhi = np.percentile(ratios, [2.5, 97.5])
    return {"diff": point_a - point_b, "diff_ci": [float(lo), float(hi)],
            "ratio": point_a / max(point_b, 1e-9), "ratio_ci": [float(rlo), float(rhi)], "seeds": seeds}


def per_utterance(eval_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (eval_dir / "hypotheses.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: r["id"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/edge_quality")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma list of " + ", ".join(ROWS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--teacher", default="builtin:reference")
    ap.add_argument("--hours", type=float, default=2.0, help="synthetic digits corpus size")
    ap.add_argument("--corpus-seed", type=int, default=1234, help="1234: the teacher's corpus (test speakers unseen)")
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--ctc-steps", type=int, default=600)
    ap.add_argument("--ctc-val-every", type=int, default=100)
    ap.add_argument("--dev-batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="aggregate what is finished, train nothing")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")
    import torch

    torch.set_num_threads(args.threads)
    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.data.synth.corpus import synthesize_corpus
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.models.load import load_encoder
    from speechdistill.prune.budget import count_encoder_macs

    out = Path(args.out)
    corpus = out / "corpus"
    if not (corpus / "test.jsonl").is_file():
        synthesize_corpus(corpus, args.hours, seed=args.corpus_seed, text="digits", progress=False)
    manifests = {s: str(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
    rows, seeds = args.rows.split(","), [int(s) for s in args.seeds.split(",")]
    runs = out / "runs"
    for seed in seeds:  # seed-major: every row gets its first seed before any gets its third
        for row in rows:
            eval_dir = runs / f"{row}_s{seed}" / "eval"
            if (eval_dir / "report.json").is_file() or args.report_only:
                continue
            t0 = time.time()
            upstream = (str(resolve_model_path(args.teacher)) if row == "teacher"
                        else str(distill(row, seed, manifests, runs / f"{row}_s{seed}" / "distill", args)))
            ctc = finetune(upstream, seed, manifests, runs / f"{row}_s{seed}" / "ctc", args)
            rep = evaluate_model(ctc, manifests["test"], eval_dir, threads=args.threads)
            log.info("%s seed %d: test WER %.4f (%.0f s)", row, seed, rep["wer"], time.time() - t0)

    # ------------------------------------------------------------------------------------------- report
    results, utts = {}, {}
    for row in rows:
        for seed in seeds:
            d = runs / f"{row}_s{seed}"
            if not (d / "eval" / "report.json").is_file():
                continue
            rep = json.loads((d / "eval" / "report.json").read_text())
            results.setdefault(row, {})[seed] = rep
            utts.setdefault(row, {})[seed] = per_utterance(d / "eval")
    table = []
    for row, by_seed in results.items():
        enc_dir = resolve_model_path(args.teacher) if row == "teacher" else runs / f"{row}_s{min(by_seed)}" / "distill" / "model"
        enc = load_encoder(enc_dir)
        hf = getattr(enc, "model", None)
        if hf is not None:
            macs = count_encoder_macs(hf, seconds=1.0).total
        else:  # GenDistiller: no analytic count, FlopCounterMode instead
            from speechdistill.report.stats import count_macs

            macs = float(count_macs(enc, 1.0))
        wers = [by_seed[s]["wer"] for s in sorted(by_seed)]
        m, ci = mean_ci(wers)
        entry = {"row": row, "seeds": sorted(by_seed), "wer_per_seed": wers, "wer_mean": m, "wer_ci95": ci,
                 "cer_mean": sum(by_seed[s]["cer"] for s in by_seed) / len(by_seed),
                 "params": sum(p.numel() for p in enc.parameters()), "mmacs_per_s": macs / 1e6,
                 "test_utterances": by_seed[min(by_seed)]["num_utterances"]}
        for ref in ("teacher", "distilhubert"):
            if ref in utts and row != ref:
                entry[f"vs_{ref}"] = paired_bootstrap(utts[row], utts[ref])
        table.append(entry)
    lines = [("| row | seeds | params (M) | MMACs/s | test WER mean ± 95% CI | per seed | vs teacher: ratio [95% CI] "
              "| vs distilhubert: diff [95% CI] |"), "|---|---|---|---|---|---|---|---|"]
    for e in table:
        vt, vd = e.get("vs_teacher"), e.get("vs_distilhubert")
        lines.append(
            f"| {e['row']} | {len(e['seeds'])} | {e['params'] / 1e6:.3f} | {e['mmacs_per_s']:.1f} | "
            f"{100 * e['wer_mean']:.2f} ± {100 * e['wer_ci95']:.2f} | "
            + " / ".join(f"{100 * w:.2f}" for w in e["wer_per_seed"]) + " | "
            + (f"{vt['ratio']:.2f} [{vt['ratio_ci'][0]:.2f}, {vt['ratio_ci'][1]:.2f}]" if vt else "–") + " | "
            + (f"{100 * vd['diff']:+.2f} [{100 * vd['diff_ci'][0]:+.2f}, {100 * vd['diff_ci'][1]:+.2f}]" if vd else "–")
            + " |"
        )
    md = "\n".join(lines)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "edge_quality.md").write_text(md + "\n")
    (out / "edge_quality.json").write_text(json.dumps({"args": vars(args), "rows": table}, indent=2))


if __name__ == "__main__":
    main()
