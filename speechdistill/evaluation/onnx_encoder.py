"""An exported ONNX encoder file behind the project's encoder interface, so the file a user ships is
the one that is scored.

The file must come from ``speechdistill export`` as an encoder (not ``--with-ctc-head``); with
``--outputs all`` it returns every hidden state [batch, layers, frames, hidden] and a weighted-sum head
can use them all, with ``--outputs last`` the head sees the final layer only.  Inputs are raw 16 kHz
waveforms and their lengths (normalisation, when the model wants it, is inside the graph).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from speechdistill.models.encoder import EncoderOutput
from speechdistill.models.errors import ModelLoadError


def is_onnx_spec(spec: str) -> bool:
    return str(spec).endswith(".onnx")


class OnnxEncoder(nn.Module):
    """``encode(wav, lengths)`` through onnxruntime (CPU); no parameters, nothing to train."""

    normalize = False  # inside the graph
    batched_cnn = True  # exported graphs run padded batches (masked group norm)

    def __init__(self, path: str | Path, threads: int = 0):
        super().__init__()
        from speechdistill.export.onnx_io import load_onnx_session, read_onnx_metadata

        self.path = Path(path)
        self.metadata = read_onnx_metadata(self.path)
        self.session = load_onnx_session(self.path, threads)
        outputs = [o.name for o in self.session.get_outputs()]
        inputs = [i.name for i in self.session.get_inputs()]
        if outputs[:1] != ["hidden_states"] or "frame_lengths" not in outputs or inputs != ["waveform", "lengths"]:
            raise ModelLoadError(
                f"{self.path}: not an encoder export (inputs {inputs}, outputs {outputs}); export the encoder "
                "with `speechdistill export --model DIR --out OUT --outputs all` (no --with-ctc-head)"
            )
        rank = len(self.session.get_outputs()[0].shape)
        self.all_layers = rank == 4
        layers = self.metadata.get("output_layers", "")
        self.num_states = len(layers.split(",")) if self.all_layers else 1
        try:
            self._hidden = int(self.metadata["hidden_size"])
        except (KeyError, ValueError):
            raise ModelLoadError(f"{self.path}: export metadata lacks hidden_size; re-export it") from None
        self.config = SimpleNamespace(
            model_type=self.metadata.get("model_type", "onnx"), precision=self.metadata.get("precision", "fp32"),
        )

    @property
    def num_output_layers(self) -> int:
        return self.num_states - 1

    @property
    def hidden_size(self) -> int:
        return self._hidden

    @property
    def precision(self) -> str:
        return self.config.precision

    def encode(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
        hs, fl = self.session.run(
            None, {"waveform": wav.detach().cpu().float().numpy(), "lengths": lengths.cpu().long().numpy()}
        )[:2]
        hs = torch.from_numpy(np.ascontiguousarray(hs))
        states = tuple(hs.unbind(1)) if self.all_layers else (hs,)
        if upto_layer is not None:
            states = states[: upto_layer + 1]
        return EncoderOutput(states, torch.from_numpy(fl).long(), None)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        return self.encode(wav, lengths, upto_layer)

    def save_pretrained(self, out_dir, **kwargs) -> None:
        raise ModelLoadError(f"{self.path} is an ONNX file: it cannot be saved as an encoder directory")
