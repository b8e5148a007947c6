"""The encoder contract every model in the project meets (HF encoders, GenDistiller, pruned, WID ...).

Teachers, students, CTC models, pruning, export and evaluation only use these members, so a new
student type plugs into all of them by implementing this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from speechdistill.models.encoder import EncoderOutput


@runtime_checkable
class Encoder(Protocol):
    #: The model's config (an HF ``PretrainedConfig``); ``config_output_lengths`` reads its CNN shape.
    config: Any
    #: True when the model expects zero-mean, unit-variance waveforms (it normalises them itself
    #: inside ``encode``; callers always pass raw audio).
    normalize: bool
    #: Run a group-norm CNN as one padded batch with masked statistics instead of per utterance:
    #: the same valid frames, but traceable for ONNX export (see ``encoder.cnn_features``).
    batched_cnn: bool

    @property
    def num_output_layers(self) -> int:
        """Layers after the input state: ``encode`` returns ``num_output_layers + 1`` hidden states."""

    @property
    def hidden_size(self) -> int:
        """Width of every returned hidden state."""

    def encode(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        """Raw 16 kHz waveforms [B, S] (right-padded) and valid lengths -> every hidden state
        (index 0 = input to the first layer), frame lengths; ``upto_layer=k`` stops after layer k."""

    def save_pretrained(self, out_dir: str | Path, **kwargs) -> None:
        """Write an HF-style directory that ``models.load.load_encoder`` reads back."""


def set_batched_cnn(module: torch.nn.Module, on: bool = True) -> None:
    """Switch every encoder inside ``module`` (a CTC model, a teacher ...) to the batched CNN."""
    for m in module.modules():
        if hasattr(m, "batched_cnn"):
            m.batched_cnn = on
