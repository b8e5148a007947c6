"""Load teachers (hub id or local directory) and build tiny random encoders for tests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from speechdistill.models.encoder import EncoderOutput, HFEncoder
from speechdistill.models.errors import ModelLoadError

log = logging.getLogger(__name__)

FAMILIES: dict[str, tuple[type[PretrainedConfig], type[nn.Module]]] = {
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
}


def is_local(name_or_path: str | Path) -> bool:
    return Path(name_or_path).exists()


def load_config(name_or_path: str | Path) -> PretrainedConfig:
    import speechdistill.models.registry  # noqa: F401  (registers our own model types)

    try:
        return AutoConfig.from_pretrained(str(name_or_path))
    except OSError as e:
        if is_local(name_or_path):
            raise ModelLoadError(f"{name_or_path}: not a model directory (no readable config.json): {e}") from None
        raise ModelLoadError(
            f"could not load {name_or_path!r}: it is not a local directory and the hub could not be reached "
            f"or has no such model ({str(e).splitlines()[0]}). Without network access, download the "
            "checkpoint elsewhere and pass its local directory instead."
        ) from None


def family_of(config: PretrainedConfig) -> str:
    mt = getattr(config, "model_type", "")
    if mt in FAMILIES:
        return mt
    base = getattr(config, "base_model_type", None)
    if base in FAMILIES:
        return base
    raise ModelLoadError(
        f"model_type {mt!r} is not a supported encoder family (supported: {', '.join(FAMILIES)})"
    )


def wants_normalized_input(name_or_path: str | Path, config: PretrainedConfig) -> bool:
    """HF feature extractors normalise waveforms for layer-norm models; follow the checkpoint's file."""
    pre = Path(name_or_path) / "preprocessor_config.json"
    if pre.is_file():
        try:
            return bool(json.loads(pre.read_text()).get("do_normalize", False))
        except (OSError, ValueError):
            pass
    return getattr(config, "feat_extract_norm", "group") == "layer"


def load_base_encoder(name_or_path: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """The bare encoder of a HuBERT/WavLM/wav2vec2 checkpoint (``*ForCTC`` too, head dropped)."""
    config = load_config(name_or_path)
    family = family_of(config)
    _, model_cls = FAMILIES[family]
    if config.model_type != family:
        raise ModelLoadError(f"{name_or_path}: use speechdistill.models.load_encoder for {config.model_type!r}")
    # Loading a ForCTC checkpoint into the base class drops the head and keeps the encoder weights.
    try:
        model = model_cls.from_pretrained(str(name_or_path), config=config, dtype=dtype)
    except OSError as e:
        raise ModelLoadError(f"{name_or_path}: could not load weights: {e}") from None
    return model


class Teacher(nn.Module):
    """A frozen encoder in eval mode with layerdrop 0 that returns every hidden state and the frame mask.

    Wraps any project encoder (``HFEncoder``, GenDistiller or pruned students). Kept out of
    ``accelerator.prepare``: it has no trainable parameters and needs no DDP wrapper.
    """

    def __init__(self, encoder: nn.Module, source: str = ""):
        super().__init__()
        self.encoder = encoder
        self.source = source
        cfg = getattr(encoder, "config", None)
        if cfg is not None and hasattr(cfg, "layerdrop"):
            cfg.layerdrop = 0.0
        self.encoder.requires_grad_(False)
        self.encoder.eval()

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

    @torch.no_grad()
    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, upto_layer: int | None = None
    ) -> EncoderOutput:
        return self.encoder.encode(wav, lengths, upto_layer=upto_layer)


def load_teacher(name_or_path: str | Path, dtype: torch.dtype | None = None) -> Teacher:
    """A teacher from a hub id (``facebook/hubert-base-ls960``, ``microsoft/wavlm-base-plus``, ...) or a
    local directory: HuBERT, WavLM and wav2vec 2.0, Base and Large, ``*ForCTC`` checkpoints too.
    Project students and pruned models load as teachers as well."""
    from speechdistill.models.load import load_encoder

    return Teacher(load_encoder(name_or_path, dtype=dtype), source=str(name_or_path))


# ---------------------------------------------------------------------------------------------
# Tiny random encoders (tests, demo) and real-size shapes (benchmarks)


def tiny_config(
    family: str = "hubert",
    norm: str = "group",
    hidden_size: int = 32,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 64,
    conv_dim: int = 16,
    **overrides,
) -> PretrainedConfig:
    """A small encoder with the real CNN strides and kernels (320 samples a frame, 400 receptive field)."""
    config_cls, _ = FAMILIES[family]
    kwargs = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": intermediate_size,
        "conv_dim": (conv_dim,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "feat_extract_norm": norm,
        "do_stable_layer_norm": (norm == "layer"),
        "layerdrop": 0.0,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "mask_time_prob": 0.0,
        "vocab_size": 32,
    }
    if family == "wavlm":
        kwargs.update(num_buckets=32, max_bucket_distance=80)
    kwargs.update(overrides)
    return config_cls(**kwargs)


def base_config(family: str = "hubert", large: bool = False) -> PretrainedConfig:
    """HuBERT/WavLM Base (or Large) shapes, random weights: for speed and memory benchmarks."""
    config_cls, _ = FAMILIES[family]
    if large:
        return config_cls(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0,
        )
    return config_cls(layerdrop=0.0)


def build_encoder(config: PretrainedConfig, seed: int | None = 0) -> nn.Module:
    if seed is not None:
        torch.manual_seed(seed)
    _, model_cls = FAMILIES[family_of(config)]
    return model_cls(config).eval()


def tiny_encoder(family: str = "hubert", norm: str = "group", seed: int = 0, **kw) -> HFEncoder:
    cfg = tiny_config(family, norm, **kw)
    return HFEncoder(build_encoder(cfg, seed), normalize=(norm == "layer"))


def tiny_teacher(family: str = "hubert", norm: str = "group", seed: int = 0, **kw) -> Teacher:
    return Teacher(tiny_encoder(family, norm, seed, **kw), source=f"tiny-{family}-{norm}")
