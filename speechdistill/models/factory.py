"""Encoders with random weights: tiny ones for tests and smoke runs, real-size ones for benchmarks,
and ``random:FAMILY`` upstreams that ``finetune-ctc`` trains from scratch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from speechdistill.config import ConfigError
from speechdistill.models.encoder import HFEncoder
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.hf import FAMILIES, check_encoder_config, config_class, family_of, model_class

PRESETS = ("base", "large", "tiny")


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
    return config_class(family)(**kwargs)


def base_config(family: str = "hubert", large: bool = False) -> PretrainedConfig:
    """HuBERT/WavLM Base (or Large) shapes, random weights: for speed and memory benchmarks."""
    cls = config_class(family)
    if large:
        return cls(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0,
        )
    return cls(layerdrop=0.0)


def build_encoder(config: PretrainedConfig, seed: int | None = 0) -> nn.Module:
    """The bare HF model for ``config`` with seeded random weights, in eval mode."""
    if seed is not None:
        torch.manual_seed(seed)
    return model_class(family_of(config))(config).eval()


def tiny_encoder(family: str = "hubert", norm: str = "group", seed: int = 0, **kw) -> HFEncoder:
    cfg = tiny_config(family, norm, **kw)
    return HFEncoder(build_encoder(cfg, seed), normalize=(norm == "layer"))


def random_encoder(family: str, overrides: dict[str, Any] | None = None, seed: int = 0) -> HFEncoder:
    """A randomly initialised HuBERT/WavLM/wav2vec2 encoder (training a model from scratch).

    ``overrides`` are HF config keys; the special key ``preset`` picks the starting shape:
    ``base`` (default, 95M), ``large`` or ``tiny`` (tests).
    """
    if family not in FAMILIES:
        raise ConfigError(f"random upstream family {family!r} is not one of {', '.join(FAMILIES)}")
    overrides = dict(overrides or {})
    preset = overrides.pop("preset", "base")
    if preset not in PRESETS:
        raise ConfigError(f"random upstream preset {preset!r} is not one of {', '.join(PRESETS)}")
    cfg = tiny_config(family) if preset == "tiny" else base_config(family, large=(preset == "large"))
    data = cfg.to_dict()
    unknown = sorted(set(overrides) - set(data))
    if unknown:
        raise ConfigError(f"unknown {family} config key(s) {', '.join(unknown)} in the upstream config")
    # Derived from conv_dim by the config itself; a stale copy fails validation.
    data.pop("num_feat_extract_layers", None)
    data.update(overrides)
    # Layer drop would skip layers, and with them hidden states a weighted-sum head expects.
    data["layerdrop"] = 0.0
    try:
        cfg = type(cfg)(**data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid random {family} config: {e}") from None
    try:
        check_encoder_config(cfg, f"random:{family} upstream config")
    except ModelLoadError as e:
        raise ConfigError(str(e)) from None
    return HFEncoder(build_encoder(cfg, seed), normalize=(cfg.feat_extract_norm == "layer"))


def tiny_teacher(family: str = "hubert", norm: str = "group", seed: int = 0, **kw):
    from speechdistill.models.teacher import Teacher

    return Teacher(tiny_encoder(family, norm, seed, **kw), source=f"tiny:{family}-{norm}")
