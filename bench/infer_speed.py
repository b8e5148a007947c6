"""CPU inference speed and peak memory: teacher vs students, PyTorch fp32 vs ONNX fp32/int8.

Models (random weights; speed and memory do not depend on the values):

- ``teacher``: HuBERT Base shape (``build_encoder(base_config(family))``, 12 layers, 94.7M parameters)
- ``distilhubert``: the same front end + 2 transformer layers (DistilHuBERT shape, copied from the teacher)
- ``gendistiller``: ``GenDistillerModel.from_teacher(teacher)`` at Base shape (1 shared decoder block,
  3 generation steps unrolled with the KV cache)
- ``edge_hubert_base`` / ``edge_wavlm_base_plus``: the edge presets, built exactly as their distillation recipes
  (``speechdistill/recipes/distill/edge_*.yaml``: layers, thin CNN, cheaper positional conv, frame rate) build
  the student, with random front-end weights (speed does not depend on them).  ``NAME+cnn``, ``NAME+pos``,
  ``NAME+rate`` are the same student with only that one front-end change (ablation rows; ``--ablations``
  adds them); ``NAME+cnn+pos`` keeps two of them.

Backends: ``torch-fp32``, ``onnx-fp32``, ``onnx-int8`` (dynamic int8 MatMul/Gemm, the export default) and
``onnx-int8-static`` (the same plus static QDQ int8 Conv, calibrated on synthetic audio).

MACs per row: ``torch.utils.flop_counter`` over the forward pass actually run, plus the attention scores and
context of ``scaled_dot_product_attention`` (2 x B x heads x T_q x T_k x head_dim MACs), which the counter
does not count on CPU (our formula, registered for ``aten._scaled_dot_product_flash_attention_for_cpu``).

Each (model, backend, threads, input length) runs in its OWN child process, so nothing (allocator
caches, thread pools, another backend's libraries) leaks between configurations.  The child reports:

- RTF = median forward time / audio duration (batch 1, after ``--warmup`` untimed forwards; feature
  extraction of the waveform is inside the model, audio loading is not timed);
- peak memory = the child's peak resident set size (``VmHWM`` from /proc/self/status; ``ru_maxrss``
  is not used because Linux carries it over from the parent across fork+exec) at the end, and
  ``baseline`` = the same after importing its libraries but before loading the model;
  ``model+activations`` = peak - baseline.  ONNX children import onnxruntime and numpy only (no torch),
  as an edge deployment would.

Ratios are to the teacher measured in the same run with the same threads and input length:
``speed-up`` = teacher PyTorch fp32 RTF / this RTF, and ``vs teacher same backend``.  Timings on a shared
machine are noisy: the load average at the start is recorded; rerun on an idle machine for numbers to quote.

Examples:
  python bench/infer_speed.py --quick                      # smoke run: 2 s input, 1 thread, 1 repeat
  python bench/infer_speed.py --out results/infer_speed.json   # the full table (about 10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from speechdistill import SAMPLE_RATE

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"
ALL_MODELS = ("teacher", "distilhubert", "gendistiller", "edge_hubert_base")
ALL_BACKENDS = ("torch-fp32", "onnx-fp32", "onnx-int8", "onnx-int8-static")
DEFAULT_BACKENDS = ("torch-fp32", "onnx-fp32", "onnx-int8")
EDGE_PREFIX = "edge_"
ABLATIONS = {"cnn": ("conv_channels",), "pos": ("pos_conv_kernel", "pos_conv_groups"), "rate": ("frame_rate_reduction",)}
ONNX_FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx", "onnx-int8-static": "static/model.int8.onnx"}


@dataclass
class Job:
    model: str
    backend: str
    threads: int
    seconds: float
    repeats: int
    warmup: int
    path: str  # model directory (torch) or .onnx file


# ------------------------------------------------------------------------------------------ child
def _maxrss_mb() -> float:
    """Peak RSS of this process in MB: ``VmHWM`` of /proc/self/status (Linux).

    Not ``ru_maxrss``: Linux carries it across fork+exec, so a child of this (large) parent would
    report the parent's RSS as its own peak.  VmHWM belongs to the exec'd address space only.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # fallback (KiB on Linux)


def run_job(job: Job) -> dict:
    """Runs inside the child process; imports only what the backend needs."""
    import numpy as np

    n = int(job.seconds * SAMPLE_RATE)
    wav = (0.1 * np.random.default_rng(0).standard_normal((1, n))).astype(np.float32)
    lengths = np.array([n], dtype=np.int64)
    if job.backend.startswith("onnx"):
        import onnxruntime as ort

        baseline = _maxrss_mb()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = job.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(job.path, sess_options=opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feeds = {names[0]: wav, names[1]: lengths}

        def forward():
            sess.run(None, feeds)
    else:
        import torch

        torch.set_num_threads(job.threads)
        from speechdistill.models.load import load_encoder

        baseline = _maxrss_mb()
        model = load_encoder(job.path).eval()
        x, lens = torch.from_numpy(wav), torch.from_numpy(lengths)

        def forward():
            with torch.inference_mode():
                model.encode(x, lens)

    load_mb = _maxrss_mb()
    for _ in range(job.warmup):
        forward()
    times = []
    for _ in range(job.repeats):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak = _maxrss_mb()
    return {
        **asdict(job),
        "times_s": times,
        "median_s": med,
        "rtf": med / job.seconds,
        "baseline_rss_mb": baseline,
        "after_load_rss_mb": load_mb,
        "peak_rss_mb": peak,
        "model_rss_mb": peak - baseline,
    }


# ----------------------------------------------------------------------------------------- parent
def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU flash-attention kernel: Q K^T and softmax(.) V, 2 FLOPs per MAC."""
    b, h, tq, d = query_shape
    return 2 * b * h * tq * key_shape[-2] * d + 2 * b * h * tq * key_shape[-2] * value_shape[-1]


def count_macs(model, seconds: float) -> int:
    """MACs of one forward pass on ``seconds`` of audio (see the module doc)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    wav = torch.zeros(1, int(seconds * SAMPLE_RATE))
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model.encode(wav)
    return counter.get_total_flops() // 2


def edge_student(name: str, teacher, family: str):
    """The student a distillation recipe ``edge_*`` (optionally ``+cnn``/``+pos``/``+rate``, or several such as
    ``+cnn+pos``: only those changes) builds from ``teacher``, with random front-end weights."""
    from dataclasses import replace

    from speechdistill.config import ConfigError, load_config
    from speechdistill.methods.distilhubert import build_student
    from speechdistill.methods.frontend import FrontEnd
    from speechdistill.models.edge_frontend import FrontEndConfig
    from speechdistill.models.teacher import Teacher
    from speechdistill.run.distill import DistillConfig

    recipe, _, only = name.partition("+")
    try:
        cfg = load_config(DistillConfig, recipe, command="distill", validate=False)
    except ConfigError as e:
        raise SystemExit(f"{name}: {e}") from None
    if (("wavlm" in recipe) != (family == "wavlm")):
        raise SystemExit(f"{name} is a {('wavlm' if 'wavlm' in recipe else 'hubert')} preset: run it with "
                         f"--family {'wavlm' if 'wavlm' in recipe else 'hubert'}")
    if cfg.method != "distilhubert":
        raise SystemExit(f"{name}: the bench builds distilhubert edge presets (recipe method {cfg.method})")
    fe = replace(cfg.frontend, conv_init="random", pos_conv_init="random")
    if only:
        unknown = [c for c in only.split("+") if c not in ABLATIONS]
        if unknown:
            raise SystemExit(f"{name}: unknown change(s) {unknown}; choose from {', '.join(ABLATIONS)}")
        default = FrontEndConfig()
        keep = tuple(k for c in only.split("+") for k in ABLATIONS[c])
        fe = replace(fe, **{k: getattr(default, k) for k in ("conv_channels", "pos_conv_kernel", "pos_conv_groups",
                                                               "frame_rate_reduction") if k not in keep})
    t = Teacher(teacher, source="random")
    front = FrontEnd(fe, t) if fe.changes_front_end else None
    return build_student(t, cfg.distilhubert, front)[0].encoder.eval()


def _calibration_manifest(work: Path) -> Path:
    """Synthetic calibration audio (tones and noise) for the static int8 variant of the bench models."""
    import numpy as np

    from speechdistill.data.audio import write_audio
    from speechdistill.data.manifest import Utterance, write_manifest

    d = work / "calib"
    manifest = d / "calib.jsonl"
    if manifest.is_file():
        return manifest
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    utts = []
    for i in range(16):
        f = rng.uniform(100, 400, size=3)
        wav = sum(np.sin(2 * np.pi * fi * t * (1 + 0.1 * np.sin(t * (j + 1)))) for j, fi in enumerate(f))
        wav = (0.2 * wav / 3 + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        p = d / f"c{i:02d}.wav"
        write_audio(str(p), wav)
        utts.append(Utterance(f"c{i:02d}", str(p), len(wav), SAMPLE_RATE))
    write_manifest(manifest, utts)
    return manifest


def build_models(
    work: Path, family: str, models: list[str], backends: list[str], reuse: bool, inputs: list[float],
) -> dict[str, dict]:
    """Save each model (PyTorch dir) and export ONNX fp32/int8 through the project's exporter."""
    import logging
    from dataclasses import replace

    import torch

    from speechdistill.export.onnx_export import OnnxExportOptions, export_onnx
    from speechdistill.export.onnx_speed import SpeedOptions
    from speechdistill.export.parity import ParityOptions
    from speechdistill.models.encoder import HFEncoder
    from speechdistill.models.factory import base_config, build_encoder
    from speechdistill.models.load import load_encoder

    logging.getLogger("speechdistill").setLevel(logging.WARNING)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    want_onnx = any(b.startswith("onnx") for b in backends)
    want_int8 = any(b.startswith("onnx-int8") for b in backends)
    want_static = "onnx-int8-static" in backends
    info: dict[str, dict] = {}
    teacher = None

    def get_teacher():
        nonlocal teacher
        if teacher is None:
            teacher = HFEncoder(build_encoder(base_config(family), seed=0), normalize=False)
        return teacher

    for name in models:
        d = work / name
        torch_dir, onnx_dir = d / "torch", d / "onnx"
        done = (
            (torch_dir / "config.json").is_file()
            and (not want_onnx or (onnx_dir / "model.onnx").is_file())
            and (not want_int8 or (onnx_dir / ONNX_FILES["onnx-int8"]).is_file())
            and (not want_static or (onnx_dir / ONNX_FILES["onnx-int8-static"]).is_file())
        )
        if not (reuse and done):
            t0 = time.time()
            if name == "teacher":
                model = get_teacher()
            elif name == "distilhubert":
                cfg = base_config(family)
                cfg.num_hidden_layers = 2
                model = HFEncoder(build_encoder(cfg, seed=0), normalize=False)
                # DistilHuBERT initialisation: the teacher's front end and first two layers.
                model.model.load_state_dict(get_teacher().model.state_dict(), strict=False)
            elif name == "gendistiller":
                from speechdistill.models.gendistiller import GenDistillerModel

                torch.manual_seed(0)
                model = GenDistillerModel.from_teacher(get_teacher()).eval()
            elif name.startswith(EDGE_PREFIX):
                torch.manual_seed(0)
                model = edge_student(name, get_teacher(), family)
            else:
                raise SystemExit(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)} (or edge_*+cnn|pos|rate, e.g. edge_hubert_base+cnn+pos)")
            model.save_pretrained(torch_dir)
            if want_onnx:
                # A short parity check keeps the bench from timing a broken export; speed is timed here, not there.
                options = OnnxExportOptions(int8=want_int8, parity=ParityOptions(lengths_s=(1.3,)),
                                            speed=SpeedOptions(enabled=False))
                export_onnx(torch_dir, onnx_dir, options)
                if want_static:
                    export_onnx(torch_dir, onnx_dir / "static", replace(
                        options, int8_conv="static", int8_calib_manifest=str(_calibration_manifest(work)),
                        int8_calib_utterances=16))
            print(f"[prepare] {name}: built and exported in {time.time() - t0:.0f} s", file=sys.stderr)
        params = _count_params(torch_dir)
        loaded = load_encoder(torch_dir).eval()
        info[name] = {
            "torch": str(torch_dir),
            **{b: str(onnx_dir / f) for b, f in ONNX_FILES.items()},
            "params_m": params / 1e6,
            "macs": {f"{s:g}": count_macs(loaded, s) for s in inputs},
            "bytes": {
                k: _size(Path(p))
                for k, p in (
                    ("torch-fp32", torch_dir / "model.safetensors"),
                    *((b, onnx_dir / f) for b, f in ONNX_FILES.items()),
                )
            },
        }
        del loaded
    return info


def _size(p: Path) -> int | None:
    return p.stat().st_size if p.is_file() else None


def _count_params(torch_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(torch_dir / "model.safetensors"), "pt") as f:
        names = f.keys()  # safe_open objects are not iterable
        for k in names:
            shape = f.get_slice(k).get_shape()
            n = 1
            for s in shape:
                n *= s
            total += n
    return total


def run_child(job: Job, timeout: float) -> dict:
    env = dict(os.environ)
    # Thread pools size themselves at import: set the limits before the child imports anything.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(job.threads)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(job))]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**asdict(job), "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {**asdict(job), "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def add_ratios(results: list[dict]) -> None:
    ref = {
        (r["backend"], r["threads"], r["seconds"]): r
        for r in results
        if r["model"] == "teacher" and "rtf" in r
    }
    for r in results:
        if "rtf" not in r:
            continue
        base = ref.get(("torch-fp32", r["threads"], r["seconds"]))
        same = ref.get((r["backend"], r["threads"], r["seconds"]))
        r["speedup_vs_teacher_torch"] = base["rtf"] / r["rtf"] if base else None
        r["speedup_vs_teacher_same_backend"] = same["rtf"] / r["rtf"] if same else None
        r["peak_mem_vs_teacher_torch"] = r["peak_rss_mb"] / base["peak_rss_mb"] if base else None
        r["model_mem_vs_teacher_same_backend"] = (
            r["model_rss_mb"] / same["model_rss_mb"] if same and same["model_rss_mb"] > 0 else None
        )


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(meta: dict, info: dict, results: list[dict]) -> str:
    legend = (
        "- RTF = compute seconds / audio seconds (lower is faster); speed-up = teacher PyTorch fp32 RTF / RTF"
        " (same threads and input); peak RSS = child VmHWM; model+act = peak RSS - peak RSS after imports;"
        " GMACs = one forward pass on the input (flop counter + SDPA scores and context)"
    )
    header = (
        "| model | params M | GMACs | backend | file MB | threads | input s | RTF"
        " | speed-up vs teacher (PyTorch fp32) | vs teacher same backend"
        " | peak RSS MB | model+act MB | peak vs teacher |"
    )
    lines = [
        "# CPU inference speed and memory",
        "",
        f"- machine: {meta['cpu']} ({meta['cores']} cores visible), load average at start {meta['load_avg']}",
        f"- torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, "
        + f"speechdistill {meta['speechdistill']}, {meta['date']}",
        f"- batch 1, {meta['warmup']} warm-up + median of {meta['repeats']} timed forwards; "
        + f"each row a fresh process; {meta.get('rounds', 1)} interleaved round(s), median round kept",
        legend,
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mi = info.get(r["model"], {})
        size = (mi.get("bytes") or {}).get(r["backend"])
        macs = (mi.get("macs") or {}).get(f"{r['seconds']:g}")
        head = (
            f"| {r['model']} | {_fmt(mi.get('params_m'), '.1f')} | {_fmt(macs / 1e9 if macs else None, '.2f')} | "
            f"{r['backend']} | {_fmt(size / 1e6 if size else None, '.0f')} | {r['threads']} | {r['seconds']:g} |"
        )
        if "error" in r:
            lines.append(head + f" error: {r['error']} | | | | | |")
            continue
        lines.append(
            head + f" {r['rtf']:.4f} | {_fmt(r['speedup_vs_teacher_torch'], '.2f')}x | "
            f"{_fmt(r['speedup_vs_teacher_same_backend'], '.2f')}x | {r['peak_rss_mb']:.0f} | "
            f"{r['model_rss_mb']:.0f} | {_fmt(r['peak_mem_vs_teacher_torch'], '.2f')}x |"
        )
    return "\n".join(lines) + "\n"


def machine_meta(args) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    import speechdistill

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "speechdistill": speechdistill.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "family": args.family,
        "memory_method": "peak RSS (VmHWM) of each child process; baseline = VmHWM after imports",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _csv(text: str, cast=str) -> list:
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(ALL_MODELS),
                   help="comma list of " + ", ".join(ALL_MODELS) + " (any edge_* recipe; edge_X+cnn|pos|rate: "
                   "that front-end change alone; edge_X+cnn+pos: those two)")
    p.add_argument("--ablations", action="store_true",
                   help="also run every edge_* model with each front-end change alone (+cnn, +pos, +rate)")
    p.add_argument(
        "--backends", default=",".join(DEFAULT_BACKENDS), help="comma list of " + ", ".join(ALL_BACKENDS)
    )
    p.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    p.add_argument("--inputs", default="10,30", help="comma list of input lengths in seconds (default 10,30)")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed forwards per configuration (median; default 3)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default 1)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every row this many times, interleaved with the others; keep the median round")
    p.add_argument(
        "--family", default="hubert", choices=["hubert", "wavlm"], help="teacher family (default hubert)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s input, 1 thread, 1 repeat, no warm-up (same models and backends)",
    )
    p.add_argument("--out", default=None, help="also write the JSON here (and the markdown beside it, .md)")
    p.add_argument(
        "--work-dir",
        default=str(DEFAULT_OUT / "models"),
        help="where the benchmark models are saved and exported (default bench/out/models)",
    )
    p.add_argument("--reuse-models", action="store_true", help="reuse models already in --work-dir")
    p.add_argument(
        "--timeout", type=float, default=900, help="seconds allowed per configuration (default 900)"
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.inputs, args.threads, args.repeats, args.warmup = "2", "1", 1, 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_job(Job(**json.loads(args.worker)))))
        return 0
    models, backends = _csv(args.models), _csv(args.backends)
    bad = [b for b in backends if b not in ALL_BACKENDS]
    if bad:
        raise SystemExit(f"unknown backend(s) {bad}; choose from {', '.join(ALL_BACKENDS)}")
    threads, inputs = _csv(args.threads, int), _csv(args.inputs, float)
    if args.ablations:
        models += [f"{m}+{a}" for m in list(models) if m.startswith(EDGE_PREFIX) and "+" not in m for a in ABLATIONS]
    if "teacher" not in models:
        print("note: without the teacher no ratios can be computed", file=sys.stderr)
    meta = machine_meta(args)
    info = build_models(Path(args.work_dir), args.family, models, backends, args.reuse_models, inputs)
    results = []
    for seconds in inputs:
        for th in threads:
            # Rounds interleave the rows of one (input, threads) group, so a burst of load from other processes
            # hits teacher and students alike; each row keeps its median-RTF round.
            rounds: dict[tuple[str, str], list[dict]] = {}
            for rnd in range(args.rounds):
                for name in models:
                    for backend in backends:
                        path = info[name]["torch" if backend == "torch-fp32" else backend]
                        job = Job(name, backend, th, seconds, args.repeats, args.warmup, path)
                        t0 = time.time()
                        r = run_child(job, args.timeout)
                        r["load_avg_1min"] = os.getloadavg()[0]
                        msg = r.get("error") or f"RTF {r['rtf']:.4f}, peak {r['peak_rss_mb']:.0f} MB"
                        print(f"[run {rnd + 1}/{args.rounds}] {name} {backend} threads={th} {seconds:g}s: {msg} "
                              f"({time.time() - t0:.0f} s, load {r['load_avg_1min']:.1f})", file=sys.stderr)
                        rounds.setdefault((name, backend), []).append(r)
            for (name, backend), rs in rounds.items():
                ok = sorted((r for r in rs if "rtf" in r), key=lambda r: r["rtf"])
                r = ok[(len(ok) - 1) // 2] if ok else rs[0]
                r["rtf_rounds"] = [x.get("rtf") for x in rs]
                r["macs"] = info[name]["macs"].get(f"{seconds:g}")
                results.append(r)
    add_ratios(results)
    md = markdown(meta, info, results)
    payload = {"meta": meta, "models": info, "results": results}
    DEFAULT_OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    targets = [DEFAULT_OUT / f"infer_speed-{stamp}.json"]
    if args.out:
        targets.append(Path(args.out))
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(json.dumps(payload, indent=2) + "\n")
        t.with_suffix(".md").write_text(md)
    print(md)
    print("wrote " + ", ".join(str(t) for t in targets) + " (+ .md)", file=sys.stderr)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
