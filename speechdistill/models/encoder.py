"""Run a HF HuBERT / WavLM / wav2vec 2.0 encoder on a padded waveform batch, correctly.

Why not ``model(input_values, attention_mask=...)``: group-norm CNNs (HuBERT Base) normalise over
time, so zero padding changes the features of every frame, and HF documents that such models must
not get an attention mask.  Here the CNN runs per utterance for group-norm models and batched for
layer-norm ones, then the transformer gets a frame mask; valid frames then match the unpadded
result for both norm types (tested).  ``batched_cnn=True`` instead runs the whole padded batch through
the CNN with the first GroupNorm's statistics restricted to each utterance's valid frames (masked group
norm): the valid frames are the same, and the graph has no per-utterance loop, so it traces for ONNX.
Hooks collect each layer's output, and ``upto_layer`` stops the forward early (curriculum stages and
STAT calibration only need shallow layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechdistill.models.frames import config_output_lengths, conv_output_lengths, frame_mask

BASE_PREFIXES = ("hubert", "wavlm", "wav2vec2")


@dataclass
class EncoderOutput:
    hidden_states: tuple[torch.Tensor, ...]  # (x0, layer1, ..., layerL), each [B, T, D]
    frame_lengths: torch.Tensor  # [B] long
    last_hidden_state: torch.Tensor | None = None  # final output (stable-LN models: after final LN)

    @property
    def frame_mask(self) -> torch.Tensor:
        return frame_mask(self.frame_lengths, self.hidden_states[0].shape[1])


def hf_model_of(obj: nn.Module) -> nn.Module:
    """The bare HF HuBERT/WavLM/wav2vec 2.0 model inside any wrapper: ``*ForCTC``/``*ForPreTraining``,
    ``HFEncoder``, a pruned encoder, a ``Teacher``, a CTC model (or the model itself)."""
    start = obj
    for _ in range(6):
        if hasattr(obj, "feature_extractor") and hasattr(obj, "feature_projection"):
            return obj
        inner = next((getattr(obj, n) for n in ("model", "encoder", *BASE_PREFIXES)
                      if isinstance(getattr(obj, n, None), nn.Module)), None)
        if inner is None:
            break
        obj = inner
    raise TypeError(f"{type(start).__name__} is not (and does not wrap) a HuBERT/WavLM/wav2vec 2.0 model")


def normalize_waveforms(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each utterance's valid samples (HF ``do_normalize``)."""
    mask = torch.arange(wav.shape[1], device=wav.device)[None, :] < lengths[:, None]
    n = lengths.clamp(min=1).to(wav.dtype)[:, None]
    mean = (wav * mask).sum(1, keepdim=True) / n
    var = (((wav - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return ((wav - mean) / torch.sqrt(var + 1e-7)) * mask


class _StopForward(Exception):
    pass


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, lengths: torch.Tensor) -> torch.Tensor:
    """``norm(x[b, :, :lengths[b]])`` for every row at once: statistics over valid frames only."""
    B, C, T = x.shape
    G = norm.num_groups
    valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    xg = x.reshape(B, G, C // G, T)
    m = valid[:, None, None, :]
    count = m.sum(-1, keepdim=True).clamp(min=1.0) * (C // G)
    mean = (xg * m).sum((-2, -1), keepdim=True) / count
    var = (((xg - mean) * m) ** 2).sum((-2, -1), keepdim=True) / count
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(B, C, T)
    if norm.affine:
        y = y * norm.weight[None, :, None] + norm.bias[None, :, None]
    return y


def _batched_group_norm_cnn(model: nn.Module, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The CNN over the padded batch, first GroupNorm over each utterance's valid frames only.  Later
    conv layers are local and a valid output frame reads only valid input frames, so valid frames equal
    the per-utterance result."""
    cfg = model.config
    h = wav[:, None]
    for i, layer in enumerate(model.feature_extractor.conv_layers):
        if i == 0:
            h = layer.conv(h)
            first = conv_output_lengths(lengths, cfg.conv_kernel[:1], cfg.conv_stride[:1])
            h = layer.activation(masked_group_norm(h, layer.layer_norm, first))
        else:
            h = layer(h)
    return h


def cnn_features(
    model: nn.Module, wav: torch.Tensor, lengths: torch.Tensor, batched: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """CNN features [B, T, C] and frame lengths; per utterance for group norm unless ``batched``
    (see module doc)."""
    cfg = model.config
    frame_lengths = config_output_lengths(cfg, lengths).long()
    if batched and cfg.feat_extract_norm == "group":
        return _batched_group_norm_cnn(model, wav, lengths).transpose(1, 2), frame_lengths
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
    batched_cnn: bool = False,
) -> EncoderOutput:
    """Hidden states of every layer (index 0 = input to the first layer), like HF's ``hidden_states``.

    ``upto_layer=k`` returns states 0..k only and skips the layers above k.
    """
    model = hf_model_of(model)
    if lengths is None:
        lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
    lengths = lengths.to(wav.device)
    if normalize:
        wav = normalize_waveforms(wav, lengths)
    feats, frame_lengths = cnn_features(model, wav, lengths, batched_cnn)
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
    """A stock HF encoder behind the project's encoder contract (``models.protocol.Encoder``)."""

    def __init__(self, model: nn.Module, normalize: bool = False, batched_cnn: bool = False):
        super().__init__()
        self.model = hf_model_of(model)
        self.normalize = normalize
        self.batched_cnn = batched_cnn

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
        return hf_encode(self.model, wav, lengths, upto_layer=upto_layer, normalize=self.normalize,
                         batched_cnn=self.batched_cnn)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None):
        return self.encode(wav, lengths, upto_layer)

    def save_pretrained(self, out_dir, **kwargs) -> None:
        self.model.save_pretrained(str(out_dir), **kwargs)
        save_feature_extractor(out_dir, self.normalize, self.model.config.feat_extract_norm == "layer")


def save_feature_extractor(out_dir, normalize: bool, attention_mask: bool) -> None:
    """``preprocessor_config.json``: stock pipelines read the sampling rate and normalisation from it.

    Called right after ``save_pretrained`` of an encoder: also gives its weight files the usual
    permissions (transformers writes them owner-only)."""
    from transformers import Wav2Vec2FeatureExtractor

    from speechdistill import SAMPLE_RATE
    from speechdistill.utils.io import share_weights

    share_weights(out_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=normalize,
        return_attention_mask=attention_mask,
    ).save_pretrained(str(out_dir))
