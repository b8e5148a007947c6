"""The module the ONNX exporter traces, and the tracing itself.

Graph contract (every exported file):

- inputs ``waveform`` [batch, samples] float32 (16 kHz mono, right-padded with zeros) and ``lengths``
  [batch] int64 (valid samples per row).  Waveform normalisation, when the model wants it, is inside
  the graph, per utterance over its valid samples, so callers feed raw audio.
- outputs ``hidden_states`` and ``frame_lengths`` [batch] int64 for an encoder, or ``log_probs``
  [batch, frames, vocab] and ``frame_lengths`` with the CTC head.  ``hidden_states`` is
  [batch, frames, hidden] for ``outputs="last"`` (the model's final output; for stable-layer-norm models
  that is after the final LayerNorm, like HF's ``last_hidden_state``) or [batch, layers, frames, hidden]
  for ``"all"`` / a list of hidden-state indices (index 0 = the input to the first layer).
- batch and time axes are dynamic; frames past ``frame_lengths`` are padding and undefined.

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), opset 17 by default.  In
torch 2.13 it still exists (deprecated), exports these models in about a second, and maps
``dynamic_axes`` straight onto the symbolic batch/time dimensions.  The tracer records only what runs,
so the example input is a padded batch of two (the frame mask is then always part of the graph) and
the parity check runs lengths and batch shapes the trace never saw, which catches anything frozen by
mistake.  The dynamo exporter (``dynamo=True`` + ``dynamic_shapes``) is not used: tried on torch 2.13 it
stops with ``GuardOnDataDependentSymNode`` at ``hf_encode``'s ``bool(fmask.all())`` (is the batch
padded?), which the TorchScript tracer simply records as taken, and it needs ~15 s for a tiny model.

Padded batches with group-norm CNNs (HuBERT Base): the project runs such CNNs per utterance, which is
not traceable, so the encoders are switched to their batched CNN (``batched_cnn``, a masked group norm
with the same valid frames; ``models.encoder.cnn_features``) while tracing.  Parity checks padded batches.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from speechdistill import SAMPLE_RATE
from speechdistill.config import ConfigError
from speechdistill.export.source import ExportSource
from speechdistill.models.encoder import EncoderOutput
from speechdistill.models.protocol import set_batched_cnn

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def parse_outputs(spec: str, num_hidden_states: int) -> list[int] | None:
    """``"last"`` -> None; ``"all"`` -> every index; ``"0,4,8"`` -> those (negative ones count from the
    end)."""
    spec = spec.strip().lower()
    if spec == "last":
        return None
    if spec == "all":
        return list(range(num_hidden_states))
    try:
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--outputs must be 'last', 'all' or comma-separated layer indices, got {spec!r}"
        ) from None
    if not idx:
        raise ConfigError("--outputs lists no layers")
    out = []
    for i in idx:
        j = i + num_hidden_states if i < 0 else i
        if not 0 <= j < num_hidden_states:
            raise ConfigError(
                f"--outputs layer {i} is out of range: the model has hidden states 0..{num_hidden_states - 1}"
            )
        out.append(j)
    return out


def select_output(out: EncoderOutput, layers: list[int] | None) -> torch.Tensor:
    if layers is None:
        return out.last_hidden_state if out.last_hidden_state is not None else out.hidden_states[-1]
    return torch.stack([out.hidden_states[i] for i in layers], dim=1)


class EncoderGraph(nn.Module):
    """(waveform, lengths) -> (hidden_states, frame_lengths): the module the exporter traces."""

    def __init__(self, encoder: nn.Module, layers: list[int] | None):
        super().__init__()
        self.encoder = encoder
        self.layers = layers

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder.encode(waveform, lengths)
        return select_output(out, self.layers), out.frame_lengths.long()


class CTCGraph(nn.Module):
    """(waveform, lengths) -> (log_probs, frame_lengths) through the CTC model."""

    def __init__(self, ctc: nn.Module):
        super().__init__()
        self.ctc = ctc

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, frame_lengths = self.ctc(waveform, lengths)
        return log_probs, frame_lengths.long()


def reference_runner(source: ExportSource, layers: list[int] | None):
    """The ORIGINAL PyTorch computation (per-utterance group-norm CNN, etc.) the export must match."""

    @torch.no_grad()
    def run(wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if source.ctc is not None:
            log_probs, fl = source.ctc(wav, lengths)
            return log_probs, fl.long()
        out = source.encoder.encode(wav, lengths)
        return select_output(out, layers), out.frame_lengths.long()

    return run


def trace_to_onnx(
    graph: nn.Module,
    path: Path,
    main_output: str,
    time_axis: int,
    opset: int = DEFAULT_OPSET,
    trace_seconds: float = 1.0,
) -> None:
    """TorchScript-export ``graph(waveform, lengths) -> (main_output, frame_lengths)`` with dynamic batch
    and time axes (``time_axis`` = the frame axis of the main output)."""
    # torch.onnx.export puts the top module back in the mode it found it in, recursively: a fresh wrapper
    # module is in training mode, which would switch dropout back on in the model after export.
    graph.eval()
    n = int(trace_seconds * SAMPLE_RATE)
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, n, generator=g)
    # Unequal lengths, so any mistake that bakes "no padding" into the graph shows up in parity.
    lengths = torch.tensor([n, int(n * 0.8)], dtype=torch.long)
    wav[1, int(lengths[1]) :] = 0
    dynamic_axes = {
        "waveform": {0: "batch", 1: "samples"},
        "lengths": {0: "batch"},
        main_output: {0: "batch", time_axis: "frames"},
        "frame_lengths": {0: "batch"},
    }
    set_batched_cnn(graph, True)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            torch.onnx.export(
                graph, (wav, lengths), str(path), dynamo=False, opset_version=opset,
                input_names=["waveform", "lengths"], output_names=[main_output, "frame_lengths"],
                dynamic_axes=dynamic_axes, do_constant_folding=True,
            )
    finally:
        set_batched_cnn(graph, False)
    # Tracer warnings here come from shape checks in transformers' mask code that hold for any input;
    # the parity check on unseen lengths is the real test, so they are only logged.
    for w in caught:
        log.debug("export warning: %s", str(w.message).splitlines()[0])
