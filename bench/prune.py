#!/usr/bin/env python
"""STAT vs baselines on the reference teacher, and the HuBERT-Base-shaped cost check.

Part 1 (quality): prune the shipped reference teacher (builtin:reference, trained with CTC on synthetic
digits) at keep ratios 0.9 ... 0.3 with stat, stat-nocorrect and magnitude, calibrating on the dev
split; on the speaker-disjoint test split report the cosine similarity of the last layer to the
unpruned teacher, the WER of the teacher's own (frozen, not retrained) CTC head on the pruned
encoder, MACs, RTF and pruning wall time. Writes OUT/prune.json, OUT/prune.md, OUT/wer_vs_macs.png.

Part 2 (--base): prune a HuBERT-Base-shaped model (random weights) with N x 10 s calibration
utterances at keep-macs 0.5 through the CLI, timing it with peak memory (time and cost do not depend
on the weights' values).

Part 3 (--cnn-check): STAT with --prune-cnn against transformer-only STAT at the same MAC budgets
(--cnn-keeps, default 0.5 and 0.35), on the same data as part 1: the CNN/transformer budget split found by
the search (default), the single global threshold it replaces, and transformer-only STAT (at its floor
when a budget is below what an unpruned CNN allows).  Writes OUT/cnn_check.md/json.

  python bench/prune.py --out bench/out/prune
  python bench/prune.py --out bench/out/prune --skip-quality --base --base-utts 256
  python bench/prune.py --out bench/out/prune --skip-quality --cnn-check
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from speechdistill import SAMPLE_RATE

METHODS = ["stat", "stat-nocorrect", "magnitude"]


def last_layer_cosine(ref_enc, enc, batches) -> float:
    import torch
    import torch.nn.functional as F

    num, den = 0.0, 0.0
    with torch.no_grad():
        for b in batches:
            a = ref_enc.encode(b.wav, b.lengths)
            p = enc.encode(b.wav, b.lengths)
            mask = a.frame_mask
            cos = F.cosine_similarity(a.hidden_states[-1], p.hidden_states[-1], dim=-1)
            num += float((cos * mask).sum())
            den += float(mask.sum())
    return num / max(den, 1.0)


def quality(args, out: Path) -> list[dict]:
    import torch

    from speechdistill.asr.ctc_model import CTCModel
    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.data.dataset import build_eval_loader
    from speechdistill.data.synth.corpus import synthesize_corpus
    from speechdistill.prune import PruneError, PruneOptions, count_encoder_macs, prune_model
    from speechdistill.prune.calib import load_calibration_audio, make_batches

    torch.set_num_threads(args.threads)
    corpus = out / "corpus"
    if not (corpus / "test.jsonl").is_file():
        # Same seed and size as the teacher's own corpus: its test speakers were never trained on.
        synthesize_corpus(corpus, 2.0, seed=1234, text="digits")
    dev, test = str(corpus / "dev.jsonl"), str(corpus / "test.jsonl")
    teacher = CTCModel.from_pretrained("builtin:reference").eval()
    base_enc = teacher.encoder
    wavs = load_calibration_audio(dev, args.num_calib, None, 0)
    test_batches = list(build_eval_loader(test, max_batch_seconds=60, max_batch_size=16))
    test_batches = test_batches[: args.test_batches] if args.test_batches else test_batches
    macs_full = count_encoder_macs(base_enc, seconds=1.0).total
    rows = []
    ref = evaluate_model(teacher, test, out / "eval" / "teacher", threads=args.threads)
    rows.append({"method": "none", "keep": 1.0, "keep_macs_achieved": 1.0, "macs_per_s": macs_full,
                 "cosine": 1.0, "wer": ref["wer"], "cer": ref["cer"], "rtf": ref["rtf"], "prune_seconds": 0.0,
                 "params": sum(p.numel() for p in base_enc.parameters())})
    print(f"teacher: WER {ref['wer']:.3f}", file=sys.stderr)
    for keep in args.keeps:
        for method in METHODS:
            t0 = time.perf_counter()
            try:
                pruned, rep = prune_model(
                    base_enc, make_batches(wavs, 40.0) if method != "magnitude" else None, method, keep,
                    options=PruneOptions(seed=0, prune_cnn=args.prune_cnn), calib_lengths=[len(w) for w in wavs],
                )
            except PruneError as e:  # e.g. below what an unpruned CNN allows: say so, keep going
                print(f"{method} keep {keep}: unreachable ({e})", file=sys.stderr)
                continue
            secs = time.perf_counter() - t0
            pruned.eval()
            model = CTCModel.from_pretrained("builtin:reference").eval()
            model.encoder = pruned  # the teacher's CTC head, frozen: no retraining anywhere
            rep_eval = evaluate_model(model, test, out / "eval" / f"{method}_{keep}", threads=args.threads)
            row = {"method": method, "keep": keep, "keep_macs_achieved": rep["keep_macs_achieved"],
                   "macs_per_s": count_encoder_macs(pruned, seconds=1.0).total,
                   "cosine": last_layer_cosine(base_enc, pruned, test_batches),
                   "wer": rep_eval["wer"], "cer": rep_eval["cer"], "rtf": rep_eval["rtf"], "prune_seconds": secs,
                   "params": sum(p.numel() for p in pruned.parameters())}
            rows.append(row)
            print(f"{method} keep {keep}: cos {row['cosine']:.4f} WER {row['wer']:.3f} ({secs:.1f} s)", file=sys.stderr)
    return rows


def cnn_check(args, out: Path) -> list[dict]:
    """Part 3: --prune-cnn (search, global) vs transformer-only STAT at the same budgets."""
    import torch

    from speechdistill.asr.ctc_model import CTCModel
    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.data.dataset import build_eval_loader
    from speechdistill.data.synth.corpus import synthesize_corpus
    from speechdistill.prune import PruneError, PruneOptions, prune_model
    from speechdistill.prune.calib import load_calibration_audio, make_batches

    torch.set_num_threads(args.threads)
    corpus = out / "corpus"
    if not (corpus / "test.jsonl").is_file():
        synthesize_corpus(corpus, 2.0, seed=1234, text="digits")
    dev, test = str(corpus / "dev.jsonl"), str(corpus / "test.jsonl")
    base_enc = CTCModel.from_pretrained("builtin:reference").eval().encoder
    wavs = load_calibration_audio(dev, args.num_calib, None, 0)
    test_batches = list(build_eval_loader(test, max_batch_seconds=60, max_batch_size=16))
    variants = [("stat (transformer only)", PruneOptions(seed=0)),
                ("stat --prune-cnn (budget search)", PruneOptions(seed=0, prune_cnn=True)),
                ("stat --prune-cnn (one global threshold)", PruneOptions(seed=0, prune_cnn=True, cnn_budget="global"))]
    rows = []
    for keep in args.cnn_keeps:
        for name, opts in variants:
            target = keep
            t0 = time.perf_counter()
            try:
                pruned, rep = prune_model(base_enc, make_batches(wavs, 40.0), "stat", target, options=opts)
            except PruneError:
                if opts.prune_cnn:
                    raise
                # Below the transformer-only floor: report transformer-only STAT at its smallest reachable model.
                floor = _transformer_floor(base_enc, wavs)
                target = floor
                pruned, rep = prune_model(base_enc, make_batches(wavs, 40.0), "stat", target, options=opts)
            secs = time.perf_counter() - t0
            model = CTCModel.from_pretrained("builtin:reference").eval()
            model.encoder = pruned.eval()
            ev = evaluate_model(model, test, out / "eval_cnn" / f"{name.split()[0]}_{keep}_{len(rows)}",
                                threads=args.threads)
            search = rep.get("cnn_budget_search") or {}
            row = {"variant": name, "keep_target": keep, "keep_macs_target_run": target,
                   "keep_macs_achieved": rep["keep_macs_achieved"], "conv_dims": rep["conv_dims"],
                   "cnn_fraction": search.get("chosen_cnn_fraction"),
                   "cosine": last_layer_cosine(base_enc, pruned, test_batches), "wer": ev["wer"], "cer": ev["cer"],
                   "prune_seconds": secs, "params": sum(p.numel() for p in pruned.parameters())}
            rows.append(row)
            print(f"{name} keep {keep}: achieved {row['keep_macs_achieved']:.3f}, cos {row['cosine']:.4f}, "
                  f"WER {row['wer']:.3f}", file=sys.stderr)
    return rows


def _transformer_floor(enc, wavs) -> float:
    """The smallest keep ratio transformer-only STAT reaches over these calibration lengths (one head and
    8 neurons per layer; the CNN, projection and positional conv whole)."""
    from dataclasses import replace

    from speechdistill.prune.budget import shape_macs_for_lengths, shape_of_model

    shape = shape_of_model(enc)
    lengths = [len(w) for w in wavs]
    smallest = replace(shape, num_heads=[1] * shape.num_layers, intermediate_sizes=[8] * shape.num_layers)
    return shape_macs_for_lengths(smallest, lengths).total / shape_macs_for_lengths(shape, lengths).total + 1e-6


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    full = next(r for r in rows if r["method"] == "none")
    for m, marker in zip(METHODS, "osx"):
        pts = sorted((r["macs_per_s"] / 1e6, r["wer"] * 100) for r in rows if r["method"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=m)
    ax.axhline(full["wer"] * 100, color="grey", ls="--", label="unpruned teacher")
    ax.set_xlabel("encoder MMACs per second of audio")
    ax.set_ylabel("test WER (%), teacher's CTC head, no retraining")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def base_cost(args, out: Path) -> dict:
    import numpy as np

    calib = out / "base_calib"
    manifest = calib / "calib.jsonl"
    model_dir = out / "hubert_base_random"
    if not manifest.is_file():
        from speechdistill.data.audio import write_audio
        from speechdistill.data.manifest import Utterance, write_manifest

        calib.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        utts = []
        t = np.arange(10 * SAMPLE_RATE) / SAMPLE_RATE
        for i in range(args.base_utts):
            f = rng.uniform(100, 400, size=3)
            wav = sum(np.sin(2 * np.pi * fi * t * (1 + 0.1 * np.sin(t * (j + 1)))) for j, fi in enumerate(f))
            wav = (0.2 * wav / 3 + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
            p = calib / f"u{i:04d}.wav"
            write_audio(str(p), wav)
            utts.append(Utterance(f"u{i:04d}", str(p), len(wav), SAMPLE_RATE))
        write_manifest(manifest, utts)
    if not (model_dir / "config.json").is_file():
        from speechdistill.models.encoder import HFEncoder
        from speechdistill.models.factory import base_config, build_encoder

        HFEncoder(build_encoder(base_config("hubert"), seed=0)).save_pretrained(model_dir)
    cmd = [sys.executable, "-m", "speechdistill", "prune", "--method", "stat", "--model", str(model_dir),
           "--calib", str(manifest), "--keep-macs", "0.5", "--out", str(out / "base_pruned"),
           "--num-calib", str(args.base_utts), "--threads", str(args.base_threads), "--overwrite"]
    print(" ".join(cmd), file=sys.stderr)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rep = json.loads((out / "base_pruned" / "prune_report.json").read_text())
    return {"utterances": args.base_utts, "seconds_each": 10, "wall_seconds": wall, "peak_rss_mb_children": peak,
            "prune_report_wall": rep.get("wall_time_s"), "calibration_s": rep.get("calibration_time_s"),
            "decompose_s": rep.get("decompose_time_s"), "keep_macs_achieved": rep.get("keep_macs_achieved"),
            "params_before": rep.get("params_before"), "params_after": rep.get("params_after"),
            "peak_rss_mb_report": rep.get("peak_rss_mb"), "threads": args.base_threads, "command": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/prune", help="output folder")
    ap.add_argument("--keeps", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
                    help="MAC keep ratios")
    ap.add_argument("--num-calib", type=int, default=256, help="calibration utterances (dev split)")
    ap.add_argument("--test-batches", type=int, default=0, help="limit batches for the cosine (0 = all)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--prune-cnn", action="store_true",
                    help="also prune CNN channels (needed below the MAC share of an unpruned CNN)")
    ap.add_argument("--skip-quality", action="store_true", help="skip part 1")
    ap.add_argument("--base", action="store_true", help="run part 2 (HuBERT-Base-shaped cost)")
    ap.add_argument("--base-utts", type=int, default=256, help="10 s calibration utterances for part 2")
    ap.add_argument("--base-threads", type=int, default=2, help="threads for part 2")
    ap.add_argument("--cnn-check", action="store_true", help="run part 3 (--prune-cnn vs transformer-only)")
    ap.add_argument("--cnn-keeps", type=float, nargs="+", default=[0.5, 0.35], help="MAC budgets for part 3")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("WARNING")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"args": vars(args)}
    if not args.skip_quality:
        rows = quality(args, out)
        result["quality"] = rows
        plot(rows, out / "wer_vs_macs.png")
        lines = ["| method | keep target | MACs kept | MMACs/s | params (M) | last-layer cos | WER | CER | RTF | prune s |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['method']} | {r['keep']:.1f} | {r['keep_macs_achieved']:.3f} | {r['macs_per_s'] / 1e6:.0f} | "
                         f"{r['params'] / 1e6:.2f} | {r['cosine']:.4f} | {r['wer']:.3f} | {r['cer']:.3f} | "
                         f"{r['rtf']:.4f} | {r['prune_seconds']:.1f} |")
        md = "\n".join(lines)
        print(md)
        (out / "prune.md").write_text(md + "\n")
    if args.cnn_check:
        rows = cnn_check(args, out)
        result["cnn_check"] = rows
        lines = ["| budget (keep MACs) | variant | MACs kept | CNN channels | CNN MACs kept | last-layer cos | WER | CER |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            frac = "–" if r["cnn_fraction"] is None else f"{r['cnn_fraction']:g}"
            lines.append(f"| {r['keep_target']:g} | {r['variant']} | {r['keep_macs_achieved']:.3f} | "
                         f"{r['conv_dims']} | {frac} | {r['cosine']:.4f} | {r['wer']:.3f} | {r['cer']:.3f} |")
        md = "\n".join(lines)
        print(md)
        (out / "cnn_check.md").write_text(md + "\n")
        (out / "cnn_check.json").write_text(json.dumps(rows, indent=2))
    if args.base:
        result["base"] = base_cost(args, out)
        print(json.dumps(result["base"], indent=2))
    (out / "prune.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
