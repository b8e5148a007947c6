#!/usr/bin/env python
"""Distillation step throughput: the optimised step against the s3prl-style step, in ONE run.

HuBERT-Base-shaped teacher (random weights: speed does not depend on the values) -> each student, a full
training step (data, teacher forward, student forward, backward, optimizer).  Each student runs in its
own subprocess holding every setting, whose timed steps alternate (s3prl, fast, s3prl, fast, ...) so
that load from other jobs lands on both sides of each ratio alike; GPU peak memory is tracked per step
(``max_memory_allocated``).  ``--isolate`` runs one process per setting instead, for per-setting peak
RSS on CPU.  ``--rounds R`` repeats everything R times (medians reported).

Settings (``--settings``):

- ``s3prl``: the reference recipe's way (s3prl ``pretrain/distiller``): fp32, no compile, HF eager
  attention (dense masks), GenDistiller's dense [K*T, K*T] mask, the teacher in TRAIN mode (dropout on,
  as s3prl's runner leaves it) under ``torch.no_grad`` running all 12 layers, CNN per utterance.
- ``fast``: what ``speechdistill distill`` does by default: teacher under ``inference_mode`` in bf16 on a
  GPU (fp32 on CPU), eval mode, stopped at the deepest target, SDPA (FlashAttention-2 when installed),
  batched CNN; GenDistiller's per-step block attention; bf16 autocast for the student on a GPU.
- ``fast+compile`` / ``fast+compile-all``: plus ``train.compile=student`` / ``all``.
- ``fast+flex``: GenDistiller's 2-D attention through FlexAttention (GPU).

Per setting: audio-s/s (median step, no syncs inside the step), the step split into data / teacher /
student forward / backward / optimizer (separate steps with a device sync after each phase), peak
memory, FLOPs per step (torch FlopCounterMode, eager) and MFU = FLOPs / step time / ``--peak-tflops``.

  python bench/distill_throughput.py                     # CPU preset: 2 threads, 2 x 8 s, s3prl vs fast
  python bench/distill_throughput.py --preset gpu        # TO RUN WHEN A GPU IS AVAILABLE (one command):
      # 24 x 15.625 s crops (the DistilHuBERT recipe's batch), s3prl / fast / fast+compile /
      # fast+compile-all for both students, MFU against the device's bf16 dense peak (H100/H200: 989)
  python bench/distill_throughput.py --manifest corpus/train.jsonl --workers 2   # data from a real loader

Writes ``--out`` PREFIX.json and PREFIX.md (default bench/out/distill_throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from speechdistill import SAMPLE_RATE

STUDENTS = ["distilhubert", "gendistiller"]
TARGETS = [4, 8, 12]

# teacher: how the teacher runs; grid: GenDistiller 2-D attention; autocast: bf16 student on a GPU.
SETTINGS: dict[str, dict] = {
    "s3prl": {"teacher": "s3prl", "grid": "dense", "autocast": False, "compile": "none"},
    "fast": {"teacher": "fast", "grid": "steps", "autocast": True, "compile": "none"},
    "fast+compile": {"teacher": "fast", "grid": "steps", "autocast": True, "compile": "student"},
    "fast+compile-all": {"teacher": "fast", "grid": "steps", "autocast": True, "compile": "all"},
    "fast+flex": {"teacher": "fast", "grid": "flex", "autocast": True, "compile": "none"},
}

PRESETS: dict[str, dict] = {
    "cpu": {"device": "cpu", "threads": 2, "batch": 2, "seconds": 8.0, "steps": 5, "warmup": 1, "rounds": 1,
            "settings": "s3prl,fast"},
    "gpu": {"device": "cuda", "threads": 8, "batch": 24, "seconds": 15.625, "steps": 10, "warmup": 3, "rounds": 1,
            "settings": "s3prl,fast,fast+compile,fast+compile-all"},
}

# Dense bf16 tensor-core peaks (TFLOP/s) for MFU when --peak-tflops is not given.
GPU_PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def build(args, setting: dict):
    """Teacher, method, student and optimizer for one setting."""
    import torch

    from speechdistill.methods.distilhubert import DistilHuBERTConfig, DistilHuBERTMethod
    from speechdistill.methods.gendistiller import GenDistillerMethod, GenDistillerMethodConfig
    from speechdistill.methods.speed import SpeedConfig
    from speechdistill.models.encoder import HFEncoder
    from speechdistill.models.factory import base_config, build_encoder
    from speechdistill.models.teacher import Teacher
    from speechdistill.train.compile import apply_compile
    from speechdistill.train.optim import OptimConfig, build_optimizer

    dev = torch.device(args.device)
    teacher = Teacher(HFEncoder(build_encoder(base_config(args.family))), source="random-base")
    if args.student == "distilhubert":
        method = DistilHuBERTMethod(teacher, DistilHuBERTConfig(targets=TARGETS))
    else:
        method = GenDistillerMethod(teacher, GenDistillerMethodConfig(targets=TARGETS))
    if setting["teacher"] == "s3prl":
        method.speed = SpeedConfig(teacher_dtype="fp32", teacher_attention="eager", teacher_batched_cnn=False,
                                   grid_attention="dense")
    else:
        method.speed = SpeedConfig(grid_attention=setting["grid"])
    method.setup(dev)
    model = method.prepare_model(method.build_model().to(dev).train())
    # Compile only after the eager FLOP count (compiled regions are invisible to FlopCounterMode).
    opt = build_optimizer(method.param_groups(model, 2e-4, 0.0), OptimConfig())
    return method, model, opt, lambda m: apply_compile(method, m, setting["compile"])


def s3prl_teacher_targets(method, batch):
    """s3prl's distiller: the teacher in train mode (dropout on) under no_grad, every layer computed."""
    import torch

    method.teacher.encoder.train()
    with torch.no_grad():
        out = method.teacher.encoder.encode(batch.wav, batch.lengths)
    return [out.hidden_states[t] for t in method.targets], out.frame_lengths, out.frame_mask


class Batches:
    """Synthetic equal-length batches, or a real loader over ``--manifest`` (crops of ``--seconds``)."""

    def __init__(self, args, dev):
        import torch

        from speechdistill.data.batch import Batch

        self.dev = dev
        self.loader = None
        if args.manifest:
            from speechdistill.data.dataset import DataConfig, build_train_loader

            cfg = DataConfig(train_manifest=args.manifest, crop_seconds=args.seconds, max_batch_size=args.batch,
                             max_batch_seconds=args.batch * args.seconds + 1e-3, num_workers=args.workers,
                             pad_to_multiple_seconds=0.5)
            self.loader, self.sampler, _ = build_train_loader(cfg, seed=0, device_type=dev.type)
            self.epoch = 0
            self.it = iter(self.loader)
        else:
            n = int(args.seconds * SAMPLE_RATE)
            g = torch.Generator().manual_seed(0)
            self.fixed = Batch(torch.randn(args.batch, n, generator=g) * 0.1, torch.full((args.batch,), n), [], [])
            if dev.type == "cuda":
                self.fixed.wav = self.fixed.wav.pin_memory()

    def next(self):
        if self.loader is None:
            return self.fixed.to(self.dev)
        try:
            b = next(self.it)
        except StopIteration:
            self.epoch += 1
            self.sampler.set_epoch(self.epoch)
            self.it = iter(self.loader)
            b = next(self.it)
        return b.to(self.dev)


class Setup:
    """One setting's teacher, student, optimizer and step function (with optional phase timing)."""

    def __init__(self, args, name: str, data: Batches):
        import torch

        self.name, self.args, self.data = name, args, data
        self.setting = SETTINGS[name]
        self.dev = torch.device(args.device)
        torch.manual_seed(0)
        self.method, self.model, self.opt, self.compile_fn = build(args, self.setting)
        self.use_bf16 = self.dev.type == "cuda" and self.setting["autocast"]
        self.s3prl = self.setting["teacher"] == "s3prl"
        self.times: list[float] = []
        self.audio: list[float] = []
        self.phases: dict[str, list[float]] = {}
        self.peak_mb = 0.0

    def step(self, timed: dict | None = None) -> float:
        import torch

        from speechdistill.methods.losses import multi_layer_loss

        method, dev = self.method, self.dev
        marks = [time.perf_counter()]

        def mark():
            if timed is not None:
                _sync(dev)
                marks.append(time.perf_counter())

        batch = self.data.next()
        mark()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            targets, _, mask = s3prl_teacher_targets(method, batch) if self.s3prl else method.teacher_targets(batch)
            mark()
            preds = method.student_predictions(self.model, batch, targets, 0)[0]
            loss, _ = multi_layer_loss(preds, targets, method.targets, mask)
        mark()
        loss.backward()
        mark()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        mark()
        if timed is not None:
            for name, a, b in zip(("data", "teacher", "student_fwd", "backward", "optimizer"), marks, marks[1:]):
                timed.setdefault(name, []).append(b - a)
        return batch.audio_seconds

    def timed_step(self) -> None:
        import torch

        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        self.audio.append(self.step())
        _sync(self.dev)
        self.times.append(time.perf_counter() - t0)
        if self.dev.type == "cuda":
            self.peak_mb = max(self.peak_mb, torch.cuda.max_memory_allocated() / 2**20)


def run_child(args) -> list[dict]:
    """Every setting of one student in this process, their steps interleaved (s3prl, fast, s3prl, fast,
    ...), so that load from other jobs lands on every setting alike; or one setting (``--isolate``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from speechdistill.report.stats import count_parameters

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    # A loader per setting, same seed: step i of every setting trains on the same batch.
    setups = [Setup(args, name, Batches(args, dev)) for name in args.setting.split(",")]
    for su in setups:
        # FLOPs of one eager step (before compiling: compiled regions do not dispatch through the counter).
        with FlopCounterMode(display=False) as fc:
            su.step()
        su.flops = fc.get_total_flops()
        su.model = su.compile_fn(su.model)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            su.step()
        _sync(dev)
        su.warmup_s = time.perf_counter() - t0
    for _ in range(args.steps):
        for su in setups:
            su.timed_step()
    for _ in range(max(1, args.steps // 2)):
        for su in setups:
            su.step(su.phases)
    out = []
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for su in setups:
        med = statistics.median(su.times)
        res = {
            "student": args.student, "setting": su.name, "device": args.device, "threads": args.threads,
            "batch": args.batch, "seconds_per_utt": args.seconds, "step_seconds_median": med,
            "step_seconds_all": su.times, "audio_sec_per_sec": statistics.median(su.audio) / med,
            "phases_median_s": {k: statistics.median(v) for k, v in su.phases.items()},
            "warmup_seconds": su.warmup_s, "student_params": count_parameters(su.model),
            "step_tflop": su.flops / 1e12, "teacher": getattr(su.method, "teacher_settings", {}),
            "data": "loader" if args.manifest else "synthetic", "interleaved_with": len(setups) - 1,
        }
        if dev.type == "cuda":
            res["peak_mem_mb"] = su.peak_mb
            res["gpu"] = torch.cuda.get_device_name()
        else:  # process-wide: per setting only with --isolate
            res["peak_mem_mb"] = rss
        out.append(res)
    return out


def peak_tflops(args, results) -> float:
    if args.peak_tflops:
        return args.peak_tflops
    gpu = next((r.get("gpu", "") for r in results if r.get("gpu")), "")
    return next((v for k, v in GPU_PEAKS.items() if k in gpu), 0.0)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(args, results: list[dict], loads: tuple[str, str]) -> tuple[str, dict]:
    settings = args.settings.split(",")
    peak = peak_tflops(args, results)
    rows, summary = [], {}
    for student in args.students.split(","):
        by = {s: [r for r in results if r["student"] == student and r["setting"] == s] for s in settings}
        fast_flops = next((r["step_tflop"] for r in by.get("fast", []) or by[settings[-1]]), None)
        for s, rs in by.items():
            step_s = statistics.median(r["step_seconds_median"] for r in rs)
            # Step-by-step pairs (interleaved steps ran back to back under the same load), every round.
            ratios = [b / x for rb, rx in zip(by[settings[0]], rs)
                      for b, x in zip(rb["step_seconds_all"], rx["step_seconds_all"])]
            phases = {k: statistics.median(r["phases_median_s"][k] for r in rs) for k in rs[0]["phases_median_s"]}
            # Compiled steps do the same arithmetic as "fast": count that step's FLOPs.
            tflop = fast_flops if s.startswith("fast+compile") and fast_flops else rs[0]["step_tflop"]
            mfu = tflop / step_s / peak if peak else None
            row = {
                "student": student, "setting": s, "audio_sec_per_sec": statistics.median(r["audio_sec_per_sec"] for r in rs),
                "step_s": step_s, "speedup_vs_" + settings[0]: statistics.median(ratios), "speedup_pairs": ratios,
                "phases_s": phases, "peak_mem_mb": max(r["peak_mem_mb"] for r in rs), "step_tflop": tflop, "mfu": mfu,
                "params_m": rs[0]["student_params"] / 1e6, "warmup_s": statistics.median(r["warmup_seconds"] for r in rs),
            }
            rows.append(row)
        summary[student] = {r["setting"]: r["speedup_vs_" + settings[0]] for r in rows if r["student"] == student}
    dev = results[0].get("gpu") or f"{args.device}, {args.threads} threads"
    head = (f"Distillation step, {dev}, batch {args.batch} x {args.seconds} s, HuBERT-Base-shaped {args.family} "
            f"teacher (random weights), targets {TARGETS}, data: {results[0]['data']}, {args.steps} timed steps, "
            f"{args.rounds} round(s); load average before/after: {loads[0]} / {loads[1]}")
    lines = [head, "",
             (f"| student | setting | audio s/s | step s | vs {settings[0]} | data | teacher | student fwd | backward | "
             "optimizer | peak mem MB | TFLOP/step | MFU |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["phases_s"]
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"| {r['student']} | {r['setting']} | {r['audio_sec_per_sec']:.2f} | {r['step_s']:.3f} | "
            f"{r['speedup_vs_' + settings[0]]:.2f}x | {p['data']:.3f} | {p['teacher']:.3f} | {p['student_fwd']:.3f} | "
            f"{p['backward']:.3f} | {p['optimizer']:.3f} | {r['peak_mem_mb']:.0f} | {r['step_tflop']:.2f} | {mfu} |"
        )
    lines += ["", (f"vs {settings[0]}: median over step pairs of {settings[0]} step time / this step time. Phases: "
                   "median seconds of separately timed steps with a device sync after each phase (their sum can "
                   "exceed the unsynchronised step time on a GPU).")]
    if results[0]["device"] == "cpu" and results[0].get("interleaved_with"):
        lines.append("Peak memory on CPU is the process's peak RSS over all interleaved settings (--isolate for each).")
    return "\n".join(lines), {"rows": rows, "speedup": summary, "peak_tflops": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="defaults for the options below")
    ap.add_argument("--device", help="cpu or cuda")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--batch", type=int, help="utterances per step")
    ap.add_argument("--seconds", type=float, help="seconds per utterance (crop length with --manifest)")
    ap.add_argument("--steps", type=int, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, help="untimed steps after the FLOP count (compilation happens here)")
    ap.add_argument("--rounds", type=int, help="alternate the settings this many times (medians reported)")
    ap.add_argument("--settings", help=f"comma-separated, the first is the baseline: {', '.join(SETTINGS)}")
    ap.add_argument("--students", default=",".join(STUDENTS), help="comma-separated students")
    ap.add_argument("--family", default="hubert", choices=["hubert", "wavlm"], help="teacher family (Base shape)")
    ap.add_argument("--manifest", help="draw batches from this manifest through the training loader")
    ap.add_argument("--workers", type=int, default=0, help="loader worker processes (with --manifest)")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="device peak for MFU (default: the bf16 dense peak of a known GPU; none on CPU)")
    ap.add_argument("--isolate", action="store_true",
                    help="one process per setting (per-setting peak memory on CPU) instead of interleaved steps")
    ap.add_argument("--out", default="bench/out/distill_throughput", help="output prefix (.json and .md)")
    ap.add_argument("--student", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--setting", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.student:
        print(json.dumps(run_child(args)))
        return
    bad = [s for s in args.settings.split(",") if s not in SETTINGS]
    if bad:
        ap.error(f"unknown setting(s) {bad}; choose from {', '.join(SETTINGS)}")
    results = []
    loads = [load_avg()]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    child_args = [a for k, v in vars(args).items() if v is not None and k not in ("student", "setting", "students",
                  "settings", "out", "preset", "manifest", "isolate") for a in (f"--{k.replace('_', '-')}", str(v))]
    if args.manifest:
        child_args += ["--manifest", args.manifest]
    groups = [[s] for s in args.settings.split(",")] if args.isolate else [args.settings.split(",")]
    for rnd in range(args.rounds):
        for student in args.students.split(","):
            for group in groups:
                cmd = [sys.executable, __file__, "--student", student, "--setting", ",".join(group), *child_args]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if out.returncode != 0:
                    sys.exit(f"{student}/{group} failed:\n{out.stderr[-4000:]}")
                for r in json.loads(out.stdout.strip().splitlines()[-1]):
                    results.append(r)
                    print(f"round {rnd + 1}: {student} {r['setting']}: {r['audio_sec_per_sec']:.2f} audio s/s "
                          f"(step {r['step_seconds_median']:.3f} s)", file=sys.stderr)
    loads.append(load_avg())
    md, summary = report(args, results, tuple(loads))
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "load_avg": loads, **summary, "results": results}, indent=2))
    out.with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
