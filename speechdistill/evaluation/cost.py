"""Cost of an encoder: parameters, MACs per second of audio (attention scores included), CPU real-time
factor at a given thread count and input length, and peak memory.

MACs are counted, not assumed: for PyTorch models by ``report.stats.count_macs`` (FlopCounterMode,
with the CPU attention kernels added); for ONNX files by running the graph once with the shape of every
matrix-product input exposed (MatMul, Gemm, Conv and their int8 forms), so an int8 file and its fp32
source report the same MACs and a file is measured as it ships.

RTF and memory come from a fresh child process per model (``python -m speechdistill.evaluation.cost``):
nothing (allocator caches, thread pools, other models) leaks between rows, and the child's peak resident
memory (``VmHWM``) minus its footprint after imports is the model's weights plus activations.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

from speechdistill import SAMPLE_RATE

log = logging.getLogger(__name__)

_MATMUL = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "DynamicQuantizeMatMul": (0, 1),
           "MatMulIntegerToFloat": (0, 1), "QLinearMatMul": (0, 3)}
_CONV = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}


def onnx_macs(path: str | Path, seconds: float = 1.0) -> int:
    """MACs of one run of an exported encoder on ``seconds`` of audio (batch 1), from runtime shapes."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    g = model.graph
    init_shapes = {t.name: list(t.dims) for t in g.initializer}
    wanted: set[str] = set()
    for n in g.node:
        if n.op_type in _MATMUL:
            wanted.update(n.input[i] for i in _MATMUL[n.op_type])
        elif n.op_type in _CONV:
            wanted.update((n.input[_CONV[n.op_type]], n.output[0]))
        elif n.op_type == "Gemm":
            wanted.update(n.input[:2])
    dynamic = sorted(w for w in wanted if w not in init_shapes)
    for name in dynamic:
        g.node.append(helper.make_node("Shape", [name], [f"{name}__shape"]))
        g.output.append(helper.make_tensor_value_info(f"{name}__shape", TensorProto.INT64, [None]))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    n = int(seconds * SAMPLE_RATE)
    feeds = {"waveform": (0.1 * np.random.default_rng(0).standard_normal((1, n))).astype(np.float32),
             "lengths": np.array([n], dtype=np.int64)}
    outs = sess.run([f"{d}__shape" for d in dynamic], feeds)
    shapes = {**init_shapes, **{d: [int(x) for x in s] for d, s in zip(dynamic, outs)}}
    total = 0
    for node in g.node:
        if node.op_type in _MATMUL:
            ia, ib = _MATMUL[node.op_type]
            a, b = shapes[node.input[ia]], shapes[node.input[ib]]
            a = [1, *a] if len(a) == 1 else a
            b = [*b, 1] if len(b) == 1 else b
            batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
            total += math.prod(batch) * a[-2] * a[-1] * b[-1]
        elif node.op_type in _CONV:
            w, y = shapes[node.input[_CONV[node.op_type]]], shapes[node.output[0]]
            total += math.prod(y) * math.prod(w[1:])
        elif node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute}
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
            nn_ = b[0] if attrs.get("transB") else b[1]
            total += m * k * nn_
    return int(total)


def count_model_macs(model, seconds: float) -> int:
    from speechdistill.evaluation.onnx_encoder import OnnxEncoder
    from speechdistill.report.stats import count_macs

    if isinstance(model, OnnxEncoder):
        return onnx_macs(model.path, seconds)
    return count_macs(model, seconds)


def file_megabytes(spec: str) -> float | None:
    from speechdistill.evaluation.encoders import model_path

    p = model_path(spec)
    if p is None:
        return None
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".onnx", ".bin")]
    return sum(f.stat().st_size for f in files) / 1e6


# ---------------------------------------------------------------------------------------------
# Speed and memory: measured in a child process


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def probe(spec: str, seconds: float, threads: int, repeats: int, warmup: int) -> dict:
    """Load ``spec`` and time ``encode`` on ``seconds`` of audio (batch 1), median of ``repeats``."""
    import numpy as np
    import torch

    from speechdistill.evaluation.encoders import load_model

    torch.set_num_threads(threads)
    base_peak, base_rss = _status_mb("VmHWM"), _status_mb("VmRSS")
    model = load_model(spec, threads=threads)
    loaded_rss = _status_mb("VmRSS")
    n = int(seconds * SAMPLE_RATE)
    wav = torch.from_numpy((0.1 * np.random.default_rng(0).standard_normal((1, n))).astype(np.float32))
    lengths = torch.tensor([n])
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model.encode(wav, lengths)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.encode(wav, lengths)
            times.append(time.perf_counter() - t0)
    peak = _status_mb("VmHWM")
    rtfs = [t / seconds for t in times]
    return {
        "rtf_runs": rtfs, "rtf": float(np.median(rtfs)), "threads": threads, "seconds": seconds,
        "peak_mb": peak, "model_mb": None if loaded_rss is None else loaded_rss - base_rss,
        "peak_over_baseline_mb": None if peak is None else peak - max(base_peak or 0.0, base_rss or 0.0),
    }


def measure_speed(spec: str, seconds: float, threads: int, repeats: int, warmup: int, isolate: bool = True) -> dict:
    """``probe`` in a fresh child process (or in this one: then peak memory is not the model's own)."""
    if not isolate:
        out = probe(spec, seconds, threads, repeats, warmup)
        out["peak_mb"] = out["peak_over_baseline_mb"] = None  # this process holds other models and caches
        return out
    import os

    cmd = [sys.executable, "-m", "speechdistill.evaluation.cost", "--spec", spec, "--seconds", str(seconds),
           "--threads", str(threads), "--repeats", str(repeats), "--warmup", str(warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        tail = (res.stderr or "").strip().splitlines()[-3:]
        raise RuntimeError(f"speed probe of {spec} failed (exit {res.returncode}): {' | '.join(tail)}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="RTF and peak memory of one encoder (a child of `speechdistill compare`)")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # Import what loading needs before the baseline is read, so the baseline is the libraries'.
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import speechdistill.evaluation.encoders
    import speechdistill.models.load  # noqa: F401

    out = probe(args.spec, args.seconds, args.threads, args.repeats, args.warmup)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
