"""Run a HF HuBERT / WavLM / wav2vec 2.0 encoder on a padded waveform batch, correctly.

Why not ``model(input_values, attention_mask=...)``: group-norm CNNs (HuBERT Base) normalise over
time, so zero padding changes the features of every frame, and HF documents that such models must
not get an attention mask.  Here the CNN runs per utterance for group-norm models and batched for
layer-norm ones, then the transformer gets a frame mask; valid frames then match the unpadded
result for both norm types (tested).  Hooks collect each layer's output, and ``upto_layer`` stops
the forward early (curriculum stages and STAT calibration only need shallow layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechdistill.models.frames import config_output_lengths, frame_mask

BASE_PREFIXES = ("hubert", "wavlm", "wav2vec2")


@dataclass
class EncoderOutput:
    hidden_states: tuple[torch.Tensor, ...]  # (x0, layer1, ..., layerL), each [B, T, D]
    frame_lengths: torch.Tensor  # [B] long
    last_hidden_state: torch.Tensor | None = None  # final output (stable-LN models: after final LN)

    @property
    def frame_mask(self) -> torch.Tensor:
        return frame_mask(self.frame_lengths, self.hidden_states[0].shape[1])


def base_model_of(model: nn.Module) -> nn.Module:
    """The bare encoder inside ``*ForCTC`` / ``*ForPreTraining`` wrappers (or the model itself)."""
    if hasattr(model, "feature_extractor") and hasattr(model, "encoder"):
        return model
    for name in BASE_PREFIXES:
        inner = getattr(model, name, None)
        if inner is not None:
            return inner
    raise TypeError(f"{type(model).__name__} is not a HuBERT/WavLM/wav2vec 2.0 model")


def normalize_waveforms(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each utterance's valid samples (HF ``do_normalize``)."""
    mask = torch.arange(wav.shape[1], device=wav.device)[None, :] < lengths[:, None]
    n = lengths.clamp(min=1).to(wav.dtype)[:, None]
    mean = (wav * mask).sum(1, keepdim=True) / n
    var = (((wav - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return ((wav - mean) / torch.sqrt(var + 1e-7)) * mask


class _StopForward(Exception):
    pass


def cnn_features(model: nn.Module, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CNN features [B, T, C] and frame lengths; per utterance for group norm (see module doc)."""
    cfg = model.config
    frame_lengths = config_output_lengths(cfg, lengths).long()
    max_frames = int(config_output_lengths(cfg, wav.shape[1]))
    same_length = bool((lengths == wav.shape[1]).all())
    if cfg.feat_extract_norm == "group" and not same_length:
        feats = None
        for i in range(wav.shape[0]):
            f = model.feature_extractor(wav[i : i + 1, : int(lengths[i])])  # [1, C, T_i]
            if feats is None:
                feats = f.new_zeros(wav.shape[0], f.shape[1], max_frames)
            feats[i, :, : f.shape[2]] = f[0]
    else:
        feats = model.feature_extractor(wav)
    return feats.transpose(1, 2), frame_lengths


def hf_encode(
    model: nn.Module,
    wav: torch.Tensor,
    lengths: torch.Tensor | None = None,
    upto_layer: int | None = None,
    normalize: bool = False,
) -> EncoderOutput:
    """Hidden states of every layer (index 0 = input to the first layer), like HF's ``hidden_states``.

    ``upto_layer=k`` returns states 0..k only and skips the layers above k.
    """
    model = base_model_of(model)
    if lengths is None:
        lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
    lengths = lengths.to(wav.device)
    if normalize:
        wav = normalize_waveforms(wav, lengths)
    feats, frame_lengths = cnn_features(model, wav, lengths)
    hidden = model.feature_projection(feats)
    if isinstance(hidden, tuple):  # wav2vec2 / WavLM also return the normalised features
        hidden = hidden[0]
    fmask = frame_mask(frame_lengths, hidden.shape[1])
    attn_mask = None if bool(fmask.all()) else fmask

    layers = model.encoder.layers
    num_layers = len(layers) if upto_layer is None else upto_layer
    if num_layers > len(layers):
        raise ValueError(f"upto_layer={upto_layer} but the model has {len(layers)} layers")
    states: list[torch.Tensor] = []
    handles = []

    def pre_hook(_mod, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])

    def post_hook(idx):
        def hook(_mod, _args, output):
            states.append(output[0] if isinstance(output, tuple) else output)
            if idx + 1 == num_layers and num_layers < len(layers):
                raise _StopForward

        return hook

    last = None
    if len(layers) == 0 or num_layers == 0:
        out = model.encoder(hidden, attention_mask=attn_mask)
        x0 = out.last_hidden_state
        return EncoderOutput((x0,), frame_lengths, x0 if len(layers) == 0 else None)
    handles.append(layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
    for i in range(num_layers):
        handles.append(layers[i].register_forward_hook(post_hook(i)))
    try:
        out = model.encoder(hidden, attention_mask=attn_mask)
        last = out.last_hidden_state
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return EncoderOutput(tuple(states), frame_lengths, last)


class HFEncoder(nn.Module):
    """A stock HF encoder behind the project's encoder interface.

    Interface shared by every encoder in the project (HF models, GenDistiller, pruned models):
    ``encode(wav, lengths, upto_layer=None) -> EncoderOutput``, ``num_output_layers``,
    ``hidden_size``, ``config`` and ``save_pretrained(dir)``.
    """

    def __init__(self, model: nn.Module, normalize: bool = False):
        super().__init__()
        self.model = base_model_of(model)
        self.normalize = normalize

    @property
    def config(self):
        return self.model.config

    @property
    def num_output_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        return hf_encode(self.model, wav, lengths, upto_layer=upto_layer, normalize=self.normalize)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        return self.encode(wav, lengths, upto_layer)

    def save_pretrained(self, out_dir, **kwargs) -> None:
        from transformers import Wav2Vec2FeatureExtractor

        self.model.save_pretrained(str(out_dir), **kwargs)
        # Stock pipelines read the normalisation flag from here.
        Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=self.normalize,
            return_attention_mask=self.model.config.feat_extract_norm == "layer",
        ).save_pretrained(str(out_dir))
