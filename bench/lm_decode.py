#!/usr/bin/env python
"""WER with and without an n-gram LM on the demo task (synthetic connected digits, teacher builtin:reference).

  bash bench/build_kenlm.sh /tmp/kenlm                      # KenLM's lmplz, once
  python bench/lm_decode.py --lmplz /tmp/kenlm/bin/lmplz --out bench/out/lm_decode

For each corpus seed: synthesise a speaker-disjoint digits corpus (`speechdistill data synth`), build a
3-gram word LM from its TRAIN transcripts with lmplz, decode dev and test with the shipped reference
teacher's CTC head (greedy, then flashlight-text beam search + KenLM through `speechdistill evaluate`'s
own code path), pick the LM weight and word score on DEV only, and report test WER for both decoders.
The LM gain comes with a paired 95 % bootstrap CI over test utterances (per seed and pooled).
Writes OUT/lm_decode.json and OUT/lm_decode.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from pathlib import Path

import numpy as np

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
WORD_SCORES = (-1.0, 0.0, 1.0)


def build_lm(lmplz: str, manifest: str, out_dir: Path, order: int) -> Path:
    from speechdistill.data.manifest import read_manifest

    text = out_dir / "lm_train.txt"
    text.write_text("".join(f"{u.text}\n" for u in read_manifest(manifest) if u.text), encoding="utf-8")
    arpa = out_dir / f"lm{order}.arpa"
    with open(text, "rb") as src, open(arpa, "wb") as dst:
        # --discount_fallback: a small corpus has too few singletons for Kneser-Ney's discount estimates.
        subprocess.run([lmplz, "-o", str(order), "--discount_fallback"], stdin=src, stdout=dst,
                       stderr=subprocess.DEVNULL, check=True)
    return arpa


def per_utterance(out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(ln) for ln in (out_dir / "hypotheses.jsonl").read_text().splitlines()]
    return np.array([r["word_errors"] for r in rows]), np.array([r["ref_words"] for r in rows])


def paired_ci(err_a: np.ndarray, err_b: np.ndarray, words: np.ndarray, n: int = 10000, seed: int = 0):
    """95 % bootstrap CI of WER(b) - WER(a), resampling utterances (paired)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(words), size=(n, len(words)))
    diff = (err_b[idx].sum(1) - err_a[idx].sum(1)) / words[idx].sum(1)
    return float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/lm_decode", help="output folder")
    ap.add_argument("--lmplz", required=True, help="KenLM's lmplz binary (bench/build_kenlm.sh builds it)")
    ap.add_argument("--seeds", default="11,12,13", help="corpus seeds (one corpus and LM each)")
    ap.add_argument("--hours", type=float, default=1.5, help="hours per corpus")
    ap.add_argument("--test-fraction", type=float, default=0.3, help="fraction of speakers held out for test")
    ap.add_argument("--order", type=int, default=3, help="n-gram order")
    ap.add_argument("--model", default="builtin:reference", help="CTC model")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("WARNING")
    logging.getLogger("bench").setLevel(logging.INFO)
    import torch

    from speechdistill.asr.ctc_model import CTCModel
    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.asr.lm_decode import LMConfig
    from speechdistill.data.synth.corpus import synthesize_corpus
    from speechdistill.utils.io import atomic_write_json, atomic_write_text

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = CTCModel.from_pretrained(args.model)
    results, pooled = [], {"greedy": [], "lm": [], "words": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        work = out / f"seed{seed}"
        corpus = work / "corpus"
        if not (corpus / "test.jsonl").is_file():
            synthesize_corpus(corpus, args.hours, seed=seed, text="digits", test_fraction=args.test_fraction,
                              progress=False)
        manifests = {s: str(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
        arpa = build_lm(args.lmplz, manifests["train"], work, args.order)

        def run(split: str, name: str, lm: LMConfig | None, manifests=manifests, work=work):
            return evaluate_model(model, manifests[split], work / f"{split}_{name}", threads=args.threads, lm=lm,
                                  progress=False)

        dev_greedy = run("dev", "greedy", None)
        grid = []
        for w in WEIGHTS:
            for ws in WORD_SCORES:
                rep = run("dev", f"lm_w{w}_s{ws}", LMConfig(path=str(arpa), weight=w, word_score=ws))
                grid.append({"weight": w, "word_score": ws, "dev_wer": rep["wer"]})
        best = min(grid, key=lambda g: (g["dev_wer"], g["weight"]))
        t0 = time.perf_counter()
        test_greedy = run("test", "greedy", None)
        t_greedy = time.perf_counter() - t0
        t0 = time.perf_counter()
        test_lm = run("test", "lm", LMConfig(path=str(arpa), weight=best["weight"], word_score=best["word_score"]))
        t_lm = time.perf_counter() - t0
        eg, words = per_utterance(work / "test_greedy")
        el, _ = per_utterance(work / "test_lm")
        lo, hi = paired_ci(eg, el, words)
        pooled["greedy"].append(eg)
        pooled["lm"].append(el)
        pooled["words"].append(words)
        speakers = len({json.loads(ln).get("speaker") for ln in Path(manifests["test"]).read_text().splitlines()})
        row = {
            "seed": seed, "test_utterances": test_greedy["num_utterances"], "test_speakers": speakers,
            "test_words": int(words.sum()), "lm": arpa.name, "lm_text_lines": len((work / "lm_train.txt").read_text().splitlines()),
            "dev_wer_greedy": dev_greedy["wer"], "dev_grid": grid, "chosen": best,
            "test_wer_greedy": test_greedy["wer"], "test_wer_lm": test_lm["wer"], "delta_ci95": [lo, hi],
            "rtf_greedy": test_greedy["rtf"], "rtf_lm": test_lm["rtf"], "wall_greedy_s": t_greedy, "wall_lm_s": t_lm,
            "decoding_lm": test_lm["decoding"],
        }
        results.append(row)
        logging.getLogger("bench").info("seed %d: greedy %.4f, LM %.4f (CI %.4f..%.4f)", seed, row["test_wer_greedy"],
                                        row["test_wer_lm"], lo, hi)
    eg, el, words = (np.concatenate(pooled[k]) for k in ("greedy", "lm", "words"))
    lo, hi = paired_ci(eg, el, words)
    summary = {"model": args.model, "order": args.order, "seeds": results,
               "pooled": {"test_utterances": len(words), "test_words": int(words.sum()),
                          "wer_greedy": float(eg.sum() / words.sum()), "wer_lm": float(el.sum() / words.sum()),
                          "delta_ci95": [lo, hi]}}
    atomic_write_json(out / "lm_decode.json", summary)
    header = ("| corpus seed | test utts / speakers | chosen on dev (weight, word score) | greedy WER | LM WER | "
              "LM − greedy, 95 % CI | RTF greedy / LM |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['seed']} | {r['test_utterances']} / {r['test_speakers']} | {r['chosen']['weight']:g}, "
                     f"{r['chosen']['word_score']:g} | {100 * r['test_wer_greedy']:.2f} % | {100 * r['test_wer_lm']:.2f} % | "
                     f"{100 * r['delta_ci95'][0]:+.2f} .. {100 * r['delta_ci95'][1]:+.2f} | "
                     f"{r['rtf_greedy']:.4f} / {r['rtf_lm']:.4f} |")
    p = summary["pooled"]
    lines.append(f"| pooled | {p['test_utterances']} | — | {100 * p['wer_greedy']:.2f} % | {100 * p['wer_lm']:.2f} % | "
                 f"{100 * p['delta_ci95'][0]:+.2f} .. {100 * p['delta_ci95'][1]:+.2f} | — |")
    atomic_write_text(out / "lm_decode.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
