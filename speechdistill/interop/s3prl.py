"""An s3prl upstream for every encoder the toolkit loads (HF HuBERT/WavLM/wav2vec 2.0, DistilHuBERT,
GenDistiller and pruned students, ``builtin:`` models, CTC model directories).

s3prl's interface (``s3prl/upstream/interfaces.py``, ``upstream/example``): an ``nn.Module`` built as
``UpstreamExpert(ckpt, model_config, **kwargs)`` whose ``forward`` takes a list of unpadded 16 kHz
waveforms and returns ``{"hidden_states": [B x T x D, ...], "last_hidden_state": ...}``, plus
``get_downsample_rates(key)``.  s3prl's custom-upstream mechanism registers such a class through
``s3prl/upstream/example/expert.py`` and runs it with ``run_downstream.py -u customized_upstream
-k CHECKPOINT``; nothing here imports s3prl.

The batch is run with the toolkit's ``encode``, which is exact on padded batches of group-norm
(HuBERT Base-style) encoders: every utterance gets the hidden states it gets alone.  Stock HF and
s3prl batching of those encoders does not (padding enters the CNN's group norm).  Frames past an
utterance's end are zero.  The last hidden state is the model's final output (after the final
LayerNorm of stable-layer-norm models, as in HF's ``hidden_states``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from speechdistill.data.batch import pad_waveforms


class UpstreamExpert(nn.Module):
    """``ckpt``: any spec ``speechdistill.models.load.load_encoder`` reads (a directory, ``builtin:NAME``,
    a hub id); ``model_config`` and s3prl's extra keyword arguments are accepted and unused."""

    def __init__(self, ckpt: str, model_config: str | None = None, **kwargs):
        super().__init__()
        from speechdistill.models.load import load_encoder
        from speechdistill.models.teacher import disable_layerdrop

        self.name = f"[speechdistill] {ckpt}"
        self.encoder = disable_layerdrop(load_encoder(ckpt)).eval()

    def _cnn_config(self):
        cfg = self.encoder.config
        return cfg if hasattr(cfg, "conv_stride") else cfg.build_frontend_config()  # GenDistiller

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        """Input samples per output frame (320 for the HuBERT/WavLM CNN)."""
        rate = 1
        for s in self._cnn_config().conv_stride:
            rate *= int(s)
        return rate

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, object]:
        device = next(self.encoder.parameters()).device
        wav, lengths = pad_waveforms([w.detach().float().reshape(-1).cpu() for w in wavs])
        out = self.encoder.encode(wav.to(device), lengths.to(device))
        states = list(out.hidden_states)
        if out.last_hidden_state is not None and out.last_hidden_state.shape == states[-1].shape:
            states[-1] = out.last_hidden_state
        valid = out.frame_mask[..., None].to(states[0].dtype)
        states = [h * valid for h in states]
        return {"last_hidden_state": states[-1], "hidden_states": states}


def speechdistill_upstream(ckpt: str, model_config: str | None = None, **kwargs) -> UpstreamExpert:
    """A hubconf-style entry (s3prl collects callables from ``upstream/*/hubconf.py``)."""
    return UpstreamExpert(ckpt, model_config, **kwargs)
