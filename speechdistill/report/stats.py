"""Model size and cost: parameters, bytes, MACs (counted, not assumed) and real-time factor."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from speechdistill import SAMPLE_RATE


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# CPU kernels of F.scaled_dot_product_attention that torch's FlopCounterMode has no formula for (it only
# registers the CUDA flash/efficient/cudnn kernels), so on a CPU the attention scores (Q·Kᵀ and
# softmax·V) of every HF SDPA layer went uncounted: 69.5 instead of 74.1 GMACs per 10 s for HuBERT Base.
_CPU_SDPA_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_mapping() -> dict:
    from torch.utils.flop_counter import flop_registry

    ops = (getattr(torch.ops.aten, name, None) for name in _CPU_SDPA_OPS)
    return {op: _sdpa_flops for op in ops if op is not None and op not in flop_registry}


def macs_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts attention on CPU (see ``_CPU_SDPA_OPS``)."""
    return FlopCounterMode(display=False, custom_mapping=_sdpa_mapping())


@torch.no_grad()
def count_macs(encoder: nn.Module, seconds: float = 10.0, sample_rate: int = SAMPLE_RATE) -> int:
    """Multiply-accumulates of one forward pass on ``seconds`` of audio, counted by torch's
    FlopCounterMode over every matmul/conv/attention the model actually runs (FLOPs / 2), attention
    scores included whichever SDPA kernel runs."""
    wav = torch.zeros(1, int(seconds * sample_rate))
    was_training = encoder.training
    encoder.eval()
    with macs_counter() as counter:
        encode = getattr(encoder, "encode", None)
        encode(wav) if encode is not None else encoder(wav)
    encoder.train(was_training)
    return counter.get_total_flops() // 2


@dataclass
class RTF:
    rtf: float
    seconds_processed: float
    audio_seconds: float
    threads: int


@torch.no_grad()
def measure_rtf(fn, audio_seconds: float, threads: int | None = None, repeats: int = 3, warmup: int = 1) -> RTF:
    """Real-time factor (processing time / audio time) of ``fn()``, median over repeats."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    times.sort()
    med = times[len(times) // 2]
    return RTF(med / audio_seconds, med, audio_seconds, threads or old)
