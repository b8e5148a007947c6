"""Frozen models: the ``Teacher`` wrapper and ``prepare_frozen``.

A teacher (and any encoder that is only read: a frozen CTC upstream, an export source, a pruning
source) runs in eval mode, without gradients and with layer drop 0 — layer drop skips layers, and
with them hidden states that targets and weighted-sum heads expect.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from speechdistill.models.encoder import EncoderOutput


def disable_layerdrop(module: nn.Module) -> nn.Module:
    """``layerdrop = 0`` in the config of every sub-module that has one."""
    for m in module.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and getattr(cfg, "layerdrop", 0.0):
            cfg.layerdrop = 0.0
    return module


def prepare_frozen(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients, layer drop 0 everywhere; returns ``module``."""
    disable_layerdrop(module)
    module.requires_grad_(False)
    module.eval()
    return module


class Teacher(nn.Module):
    """A frozen encoder (``prepare_frozen``) that returns every hidden state and the frame mask.

    Wraps any project encoder (``HFEncoder``, GenDistiller or pruned students). Kept out of
    ``accelerator.prepare``: it has no trainable parameters and needs no DDP wrapper.
    """

    def __init__(self, encoder: nn.Module, source: str = ""):
        super().__init__()
        self.encoder = prepare_frozen(encoder)
        self.source = source

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    @property
    def config(self) -> PretrainedConfig:
        return self.encoder.config

    @property
    def num_layers(self) -> int:
        return self.encoder.num_output_layers

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @torch.inference_mode()
    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        """Hidden states 0..``upto_layer`` (all by default); layers above it never run.

        Runs under ``torch.inference_mode``: the outputs are inference tensors, which autograd cannot
        save for backward; take copies (``.to(torch.float32, copy=True)``) before using them in a loss."""
        param = next(self.encoder.parameters(), None)
        if param is not None and param.is_floating_point() and wav.dtype != param.dtype:
            wav = wav.to(param.dtype)  # a bf16/fp16 teacher (models.teacher_forward)
        return self.encoder.encode(wav, lengths, upto_layer=upto_layer)


def unwrap_teacher(obj: nn.Module) -> nn.Module:
    """The encoder inside a ``Teacher`` (anything else unchanged)."""
    return obj.encoder if isinstance(obj, Teacher) else obj
