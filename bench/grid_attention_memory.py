#!/usr/bin/env python
"""GenDistiller's peak training memory with the block-structured 2-D attention against the dense mask.

The teacher-forced training pass of a Base-shape GenDistiller student (teacher CNN front end, one shared
768-wide decoder block, targets 4/8/12 -> 3 steps) on ``--seconds`` of audio, forward and backward,
teacher layers given as random tensors (the teacher's own memory is not the question here).  Each
implementation runs in its own process; reported: peak RSS of the process (CPU) or
``max_memory_allocated`` (GPU), the part of it the step added, the dense mask's size, and step time.

  python bench/grid_attention_memory.py                    # CPU, 30 s, batch 1, dense vs steps
  python bench/grid_attention_memory.py --decoder-only --batch 4 --padded   # attention's share, padding masks
  python bench/grid_attention_memory.py --device cuda --batch 8 --impls dense,steps,flex
Writes ``--out`` PREFIX.json and PREFIX.md (default bench/out/grid_attention_memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from speechdistill import SAMPLE_RATE


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(args) -> dict:
    import torch

    from speechdistill.models.block_attention import set_grid_attention
    from speechdistill.models.factory import base_config, build_encoder
    from speechdistill.models.frames import config_output_lengths
    from speechdistill.models.gendistiller import GenDistillerModel

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    teacher = build_encoder(base_config("hubert"))
    student = GenDistillerModel.from_teacher(teacher, target_layers=[int(t) for t in args.targets.split(",")],
                                               dropout=0.0, mask=args.mask)
    del teacher
    student.to(dev).train()
    set_grid_attention(student, args.impl)
    n = int(args.seconds * SAMPLE_RATE)
    T = int(config_output_lengths(student.frontend.config, n))
    K = student.config.num_steps
    wav = torch.randn(args.batch, n, device=dev) * 0.1
    lengths = torch.full((args.batch,), n, device=dev)
    if args.padded:  # the last item shorter: padding masks in play
        lengths[-1] = n * 3 // 4
    teacher_layers = torch.randn(args.batch, K, T, student.hidden_size, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    t0 = time.perf_counter()
    if args.decoder_only:  # the 2-D attention's share alone: x0 given, no CNN activations
        x0 = torch.randn(args.batch, T, student.hidden_size, device=dev, requires_grad=True)
        frame_lengths = config_output_lengths(student.frontend.config, lengths)
    else:
        x0, frame_lengths = student.front_end(wav, lengths)
    preds = student.forward_train(x0, teacher_layers, frame_lengths)
    preds.float().square().mean().backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "impl": args.impl, "mask": args.mask, "decoder_only": args.decoder_only, "device": args.device, "batch": args.batch, "seconds": args.seconds,
        "padded": args.padded, "frames": T, "steps": K, "step_seconds": time.perf_counter() - t0,
        "peak_mb": peak, "before_step_mb": base, "step_added_mb": peak - base,
        # What the dense path allocates for its boolean mask alone ([B, 1, K*T, K*T] bytes).
        "dense_mask_mb": args.batch * (K * T) ** 2 / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--mask", default="full", choices=["full", "previous"])
    ap.add_argument("--targets", default="4,8,12", help="teacher layers = generation steps (all 12 for many steps)")
    ap.add_argument("--padded", action="store_true", help="make the last item shorter (padding masks)")
    ap.add_argument("--decoder-only", action="store_true", help="skip the CNN front end (x0 random): attention's share")
    ap.add_argument("--impls", default="dense,steps", help="comma-separated: dense, steps, flex")
    ap.add_argument("--out", default="bench/out/grid_attention_memory")
    ap.add_argument("--impl", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.impl:
        print(json.dumps(run_one(args)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    results = []
    for impl in args.impls.split(","):
        cmd = [sys.executable, __file__, "--impl", impl, "--device", args.device, "--threads", str(args.threads),
               "--seconds", str(args.seconds), "--batch", str(args.batch), "--mask", args.mask, "--targets", args.targets]
        cmd += [f for f, on in (("--padded", args.padded), ("--decoder-only", args.decoder_only)) if on]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            sys.exit(f"{impl} failed:\n{out.stderr[-4000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{impl}: peak {results[-1]['peak_mb']:.0f} MB", file=sys.stderr)
    r0 = results[0]
    lines = [
        (f"GenDistiller training pass ({'decoder only' if args.decoder_only else 'front end + decoder'}, forward + "
        f"backward), Base shape, {args.device}, "
        f"batch {args.batch} x {args.seconds} s ({r0['frames']} frames, {r0['steps']} steps), mask {args.mask}"
        f"{', last item padded' if args.padded else ''}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"),
        "",
        "| attention | peak MB | added by the step MB | vs dense (added) | dense mask alone MB | step s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['impl']} | {r['peak_mb']:.0f} | {r['step_added_mb']:.0f} | "
                     f"{r['step_added_mb'] / r0['step_added_mb']:.2f}x | {r0['dense_mask_mb']:.0f} | {r['step_seconds']:.2f} |")
    md = "\n".join(lines)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    out.with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
