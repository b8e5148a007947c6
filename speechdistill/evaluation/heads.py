"""Task heads on cached layer stacks.

- ASR reuses ``asr.ctc_model.CTCModel`` unchanged, with ``CachedStates`` as its encoder: an "encoder"
  whose input already is the stack of hidden states, so the CTC model's weighted layer sum, BiLSTM,
  SpecAugment and output layer (and ``methods.ctc``'s loss and dev WER) are the same code as
  ``finetune-ctc``'s.
- KS and SID use ``UtteranceHead``: softmax layer weights over mean-pooled states, then an MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechdistill.models.encoder import EncoderOutput
from speechdistill.utils.io import atomic_write_json


class CachedStates(nn.Module):
    """Stands in for a frozen encoder whose states were cached: ``encode(states [B, S, T, D], frame_lengths)``
    returns them as ``hidden_states``.  No parameters; ``save_pretrained`` writes only a note."""

    normalize = False
    batched_cnn = False

    def __init__(self, num_states: int, hidden_size: int, source: str = ""):
        super().__init__()
        self._num_states = num_states
        self._hidden = hidden_size
        self.source = source
        self.config = None

    @property
    def num_output_layers(self) -> int:
        return self._num_states - 1

    @property
    def hidden_size(self) -> int:
        return self._hidden

    def encode(self, states: torch.Tensor, frame_lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        if frame_lengths is None:
            frame_lengths = torch.full((states.shape[0],), states.shape[2], dtype=torch.long, device=states.device)
        return EncoderOutput(tuple(states.unbind(1)), frame_lengths, None)

    def save_pretrained(self, out_dir, **kwargs) -> None:
        atomic_write_json(f"{out_dir}/cached_states.json", {
            "note": "a head trained on cached states of a frozen encoder; the encoder is not stored here",
            "source": self.source, "num_states": self._num_states, "hidden_size": self._hidden,
        })


class UtteranceHead(nn.Module):
    """Weighted sum of (layer-normalised) pooled states -> [Linear, ReLU, dropout] -> Linear to classes."""

    def __init__(self, num_states: int, hidden_size: int, num_classes: int, hidden: int = 256,
                 dropout: float = 0.1, normalize_states: bool = True):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_states))  # uniform at the start (s3prl)
        self.normalize_states = normalize_states
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, num_classes))
        else:
            self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """[B, S, D] -> logits [B, classes] (float32)."""
        x = pooled.float()
        if self.normalize_states:
            x = F.layer_norm(x, x.shape[-1:])
        w = self.layer_weights.softmax(0)
        return self.mlp((w[None, :, None] * x).sum(1)).float()

    def layer_weight_list(self) -> list[float]:
        return [float(w) for w in self.layer_weights.detach().softmax(0)]
