"""Speed of exported files: the real-time factor of an ONNX model (and of its PyTorch source) at a thread count.

``export`` reports this for every variant it writes, so the choice between fp32, dynamic int8 and static int8
rests on a measurement of the file that ships rather than on expectations (dynamic int8 Conv, for one, is
often slower in onnxruntime).  One random waveform of ``seconds`` (batch 1), ``warmup`` untimed runs, then
the median of ``repeats``.  On a shared machine these are indicative; compare variants measured together.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speechdistill import SAMPLE_RATE


@dataclass
class SpeedOptions:
    threads: int = 2  # intra-op threads (onnxruntime and torch alike)
    seconds: float = 10.0  # input length
    repeats: int = 3
    warmup: int = 1
    enabled: bool = True

    def validate(self) -> None:
        from speechdistill.config import ConfigError

        if self.threads < 1 or self.seconds < 0.1 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError("speed: threads >= 1, seconds >= 0.1, repeats >= 1 and warmup >= 0 are required")


@dataclass
class SpeedResult:
    variant: str  # "onnx-fp32", "onnx-int8", "torch-fp32" ...
    file: str
    rtf: float  # median compute seconds / audio seconds
    median_s: float
    threads: int
    seconds: float
    file_mb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _input(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    n = int(seconds * SAMPLE_RATE)
    wav = (0.1 * np.random.default_rng(0).standard_normal((1, n))).astype(np.float32)
    return wav, np.array([n], dtype=np.int64)


def _time(fn, options: SpeedOptions) -> float:
    for _ in range(options.warmup):
        fn()
    times = []
    for _ in range(options.repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def onnx_speed(path: str | Path, variant: str, options: SpeedOptions) -> SpeedResult:
    from speechdistill.export.onnx_io import load_onnx_session

    path = Path(path)
    sess = load_onnx_session(path, options.threads)
    names = [i.name for i in sess.get_inputs()]
    wav, lengths = _input(options.seconds)
    feeds = {names[0]: wav, names[1]: lengths}
    med = _time(lambda: sess.run(None, feeds), options)
    return SpeedResult(variant, path.name, med / options.seconds, med, options.threads, options.seconds,
                       path.stat().st_size / 1e6)


def torch_speed(module, variant: str, options: SpeedOptions) -> SpeedResult:
    """RTF of a PyTorch encoder (``encode``) or CTC model (``__call__``), with the torch thread count pinned."""
    import torch

    wav, lengths = _input(options.seconds)
    x, n = torch.from_numpy(wav), torch.from_numpy(lengths)
    fn = getattr(module, "encode", None) or module
    old = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        with torch.inference_mode():
            med = _time(lambda: fn(x, n), options)
    finally:
        torch.set_num_threads(old)
    return SpeedResult(variant, "", med / options.seconds, med, options.threads, options.seconds)


def format_speed(results: list[SpeedResult]) -> str:
    """One line per variant, with the speed-up over the first (the reference)."""
    if not results:
        return ""
    ref = results[0].rtf
    return "\n".join(
        f"{r.variant}: RTF {r.rtf:.4f} ({r.threads} thread(s), {r.seconds:g} s input)"
        + (f", {ref / r.rtf:.2f}x vs {results[0].variant}" if r is not results[0] and r.rtf > 0 else "")
        + (f", {r.file_mb:.1f} MB" if r.file_mb is not None else "")
        for r in results
    )
