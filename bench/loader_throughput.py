#!/usr/bin/env python
"""The training data loader alone: utterances/s and audio-seconds/s, FLAC against pre-decoded shards.

Runs ``build_train_loader`` exactly as training does (duration buckets, random crops, collation,
``num_workers`` processes) over ``--epochs`` epochs and times every batch, for each source manifest and
worker count.  The first batch (worker start-up) is reported apart.  Compare the result with the
step's appetite: ``--step-rate`` audio-s/s (e.g. a GPU target of 3,500) says how many workers keep up.

  speechdistill data folder --root /data/LibriSpeech/train-clean-100 --out ls.jsonl
  speechdistill data predecode ls.jsonl --out ls_shards
  python bench/loader_throughput.py --manifest flac=ls.jsonl --manifest shards=ls_shards/ls.jsonl --workers 0,1,2
Writes ``--out`` PREFIX.json and PREFIX.md (default bench/out/loader_throughput).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path


def measure(manifest: str, workers: int, args) -> dict:
    import torch

    from speechdistill.data.dataset import DataConfig, build_train_loader

    torch.set_num_threads(1)
    cfg = DataConfig(train_manifest=manifest, crop_seconds=args.crop_seconds, max_batch_seconds=args.batch_seconds,
                     max_batch_size=args.batch_size, num_workers=workers, pad_to_multiple_seconds=0.5)
    loader, sampler, _ = build_train_loader(cfg, seed=0)
    t_start = time.perf_counter()
    first = None
    utts, audio, batches = 0, 0.0, 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            if first is None:
                first = time.perf_counter() - t_start
                t_steady = time.perf_counter()
                continue
            utts += len(batch)
            audio += batch.audio_seconds
            batches += 1
    steady = time.perf_counter() - t_steady
    return {"manifest": manifest, "workers": workers, "first_batch_s": first, "batches": batches,
            "utterances": utts, "audio_s": audio, "seconds": steady,
            "utt_per_s": utts / steady, "audio_s_per_s": audio / steady}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", action="append", required=True, help="NAME=PATH (repeat)")
    ap.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--crop-seconds", type=float, default=15.625, help="random crop (the DistilHuBERT recipe's)")
    ap.add_argument("--batch-seconds", type=float, default=375.0)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--step-rate", type=float, default=3500.0, help="audio-s/s the training step consumes")
    ap.add_argument("--out", default="bench/out/loader_throughput")
    args = ap.parse_args()
    rows = []
    for spec in args.manifest:
        name, _, path = spec.partition("=")
        for w in (int(x) for x in args.workers.split(",")):
            r = {"source": name, **measure(path, w, args)}
            rows.append(r)
            print(f"{name} workers={w}: {r['utt_per_s']:.1f} utt/s, {r['audio_s_per_s']:.0f} audio-s/s", flush=True)
    lines = [
        (f"Training loader alone (crops {args.crop_seconds} s, batches <= {args.batch_size} x <= {args.batch_seconds} s, "
        f"{args.epochs} epochs, first batch excluded); {os.cpu_count()} CPU cores; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"), "",
        (f"| source | workers | utt/s | audio-s/s | first batch s | vs step rate {args.step_rate:.0f} |"
        f" workers for {args.step_rate:.0f} (at this rate each) |"),
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_worker = r["audio_s_per_s"] / max(r["workers"], 1)
        lines.append(f"| {r['source']} | {r['workers']} | {r['utt_per_s']:.1f} | {r['audio_s_per_s']:.0f} | "
                     f"{r['first_batch_s']:.2f} | {r['audio_s_per_s'] / args.step_rate:.2f}x | "
                     f"{math.ceil(args.step_rate / per_worker)} |")
    md = "\n".join(lines)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
