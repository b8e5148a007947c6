"""The one place that maps waveform lengths to frame counts (teacher/student frame counts off by one are a common distillation bug)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def conv_output_lengths(
    lengths: torch.Tensor | int, kernels: Sequence[int], strides: Sequence[int]
) -> torch.Tensor | int:
    """Frames produced by a stack of unpadded 1-D convolutions (the HuBERT/WavLM CNN)."""
    out = lengths
    for k, s in zip(kernels, strides):
        if isinstance(out, torch.Tensor):
            out = torch.div(out - k, s, rounding_mode="floor") + 1
            out = out.clamp(min=0)
        else:
            out = max((out - k) // s + 1, 0)
    return out


def config_output_lengths(config, lengths: torch.Tensor | int) -> torch.Tensor | int:
    return conv_output_lengths(lengths, config.conv_kernel, config.conv_stride)


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Samples needed for one frame (400 for the HuBERT/WavLM CNN)."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf


def frame_mask(frame_lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """Boolean [B, T] mask, True on valid frames."""
    return torch.arange(max_frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]


def sample_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
