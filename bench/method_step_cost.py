#!/usr/bin/env python
"""Training-step cost per distillation method (DistilHuBERT, GenDistiller, WID, WID-KD, masked units): audio-seconds
per second and peak memory, one plain training step each (bench/distill_throughput.py compares step
implementations instead: s3prl-style vs optimised).

HuBERT-Base-shaped teacher (random weights: speed does not depend on the values) -> each student,
a full training step (teacher forward, student forward + backward, AdamW step).  WID students carry the
whole teacher plus its compactors (the ``wid_hubert_base`` widths, masks at target); masked-unit
students (``masked_units``, ``wid``) read random unit labels instead of running the teacher. Each configuration
runs in its own subprocess so peak memory (ru_maxrss on CPU, max_memory_allocated on GPU) is its own.
On a GPU: bf16 autocast and an MFU estimate (FLOPs counted by torch's FlopCounterMode / time / peak).

  python bench/method_step_cost.py                      # CPU, 2 threads, batch 2 x 8 s
  python bench/method_step_cost.py --device cuda --batch 24 --seconds 15.6 --peak-tflops 989
Writes bench/out/method_step_cost.{json,md} (or --out PREFIX).
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

STUDENTS = ["distilhubert", "gendistiller", "wid", "wid_kd", "masked_units"]
VARIANTS = {
    "distilhubert": "expand-last heads",
    # WID's training model is the whole teacher plus its compactors (params below are what trains).
    "wid": "compactors -> 12x384, units", "wid_kd": "compactors -> 12x384, layer loss",
    "masked_units": "12x384, units",
}


def _unit_labels(folder: Path, ids: list[str], frames: int, k: int = 500) -> str:
    """Random unit labels for the benchmark's batch (masked prediction needs a label folder)."""
    import numpy as np

    from speechdistill.units.store import LabelWriter

    w = LabelWriter(folder, {"teacher": "random-base", "layer": 9, "k": k, "kmeans_fingerprint": "-", "hop": 320,
                             "manifest": "-"})
    rng = np.random.default_rng(0)
    for i in ids:
        w.add(i, rng.integers(0, k, frames))
    w.finish(len(ids))
    return str(folder)


def run_one(args) -> dict:
    import tempfile

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from speechdistill.data.batch import Batch
    from speechdistill.methods.distilhubert import DistilHuBERTConfig, DistilHuBERTMethod
    from speechdistill.methods.gendistiller import GenDistillerMethod, GenDistillerMethodConfig
    from speechdistill.methods.masked_prediction import MaskedPredictionConfig
    from speechdistill.methods.masked_units import MaskedUnitsConfig, MaskedUnitsMethod
    from speechdistill.methods.wid import WIDConfig, WIDKDConfig, WIDKDMethod, WIDMethod
    from speechdistill.models.encoder import HFEncoder
    from speechdistill.models.factory import base_config, build_encoder
    from speechdistill.models.frames import config_output_lengths
    from speechdistill.models.size import count_parameters, student_parameters
    from speechdistill.models.teacher import Teacher

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    teacher = Teacher(HFEncoder(build_encoder(base_config(args.family))), source="random-base")
    n = int(args.seconds * SAMPLE_RATE)
    ids = [f"b{i}" for i in range(args.batch)]
    tmp = tempfile.TemporaryDirectory()
    mp = MaskedPredictionConfig(labels=_unit_labels(Path(tmp.name), ids, int(config_output_lengths(teacher.config, n))))
    # WID: HuBERT Base -> 12 x 384 (the wid_hubert_base recipe's widths); masks at target from step 1, so
    # the timed steps include the masked decay.
    wid = WIDConfig(w_step=1, mask_updates=1, attention_updates=1,
                    attention_strategy="dim" if args.family == "wavlm" else "head",
                    num_attention_heads=0 if args.family == "wavlm" else 6)
    if args.student == "distilhubert":
        method = DistilHuBERTMethod(teacher, DistilHuBERTConfig(targets=[4, 8, 12]))
    elif args.student == "wid":
        method = WIDMethod(teacher, wid, mp, total_steps=10)
    elif args.student == "wid_kd":
        method = WIDKDMethod(teacher, wid, WIDKDConfig(targets=[4, 8, 12]), total_steps=10)
    elif args.student == "masked_units":
        method = MaskedUnitsMethod(teacher, MaskedUnitsConfig(), mp)
    else:
        method = GenDistillerMethod(teacher, GenDistillerMethodConfig(
            targets=[4, 8, 12], mask=args.mask, training_mode=args.training_mode))
    method.setup(dev)
    model = method.build_model().to(dev).train()
    groups = method.param_groups(model, 1e-4, 0.0)
    opt = torch.optim.AdamW(groups, lr=1e-4)
    batch = Batch(torch.randn(args.batch, n, device=dev) * 0.1, torch.full((args.batch,), n, device=dev), ids, [])
    use_bf16 = dev.type == "cuda"
    edit = getattr(method, "before_optimizer_step", None)
    calls = [0]

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, _ = method.compute_loss(model, batch, 0)
        loss.backward()
        if edit is not None:
            edit(model, opt, calls[0])
        calls[0] += 1
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    res = {
        "student": args.student, "device": args.device, "threads": args.threads, "batch": args.batch,
        "seconds_per_utt": args.seconds, "step_seconds_median": med,
        "audio_sec_per_sec": args.batch * args.seconds / med,
        "student_params": student_parameters(model).encoder, "head_params": student_parameters(model).heads,
        "teacher_params": count_parameters(teacher),
        "trainable_params": count_parameters(model, trainable_only=True),
        "variant": VARIANTS.get(args.student, f"{args.mask} mask, {args.training_mode}"),
        "step_tflops": flops / 1e12, "achieved_tflops_per_s": flops / med / 1e12,
        "mixed_precision": "bf16" if use_bf16 else "fp32",
    }
    if dev.type == "cuda":
        res["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        res["gpu"] = torch.cuda.get_device_name()
        if args.peak_tflops:
            res["mfu"] = res["achieved_tflops_per_s"] / args.peak_tflops
    else:
        res["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--batch", type=int, default=2, help="utterances per step")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per utterance")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--family", default="hubert", choices=["hubert", "wavlm"], help="teacher family (Base shape)")
    ap.add_argument("--mask", default="full", choices=["full", "previous", "axial"], help="GenDistiller mask")
    ap.add_argument("--training-mode", default="free_running", choices=["teacher_forced", "free_running"],
                    help="GenDistiller training mode")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (bf16 dense) for MFU, e.g. 989 on H100")
    ap.add_argument("--students", default=",".join(STUDENTS), help="comma-separated students to run")
    ap.add_argument("--out", default="bench/out/method_step_cost", help="output prefix (.json and .md)")
    ap.add_argument("--student", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.student:
        print(json.dumps(run_one(args)))
        return
    results = []
    for s in args.students.split(","):
        cmd = [sys.executable, __file__, "--student", s] + [
            a for k, v in vars(args).items() if k not in ("student", "students", "out")
            for a in (f"--{k.replace('_', '-')}", str(v))
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{s}: {results[-1]['audio_sec_per_sec']:.2f} audio s/s", file=sys.stderr)
    base = next((r for r in results if r["student"] == "distilhubert"), results[0])
    lines = [
        (f"Distillation step throughput ({args.device}, {args.threads} threads, batch {args.batch} x {args.seconds} s, "
         f"HuBERT-Base-shaped {args.family} teacher, random weights)"), "",
        ("| student | variant | params (M) | + heads (M) | step s (median) | audio s / s | vs DistilHuBERT "
         "| peak mem (MB) | TFLOP/step | MFU |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mfu = f"{r['mfu'] * 100:.1f}%" if "mfu" in r else "-"
        lines.append(
            f"| {r['student']} | {r['variant']} | {r['student_params'] / 1e6:.2f} | {r['head_params'] / 1e6:.2f} | "
            f"{r['step_seconds_median']:.3f} | "
            f"{r['audio_sec_per_sec']:.2f} | {r['audio_sec_per_sec'] / base['audio_sec_per_sec']:.2f}x | "
            f"{r['peak_mem_mb']:.0f} | {r['step_tflops']:.3f} | {mfu} |"
        )
    md = "\n".join(lines)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    out.with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
