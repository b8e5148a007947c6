"""The Hugging Face encoder families this project runs, and loading their checkpoints.

HuBERT, WavLM and wav2vec 2.0 share one layout (CNN ``feature_extractor``, ``feature_projection``,
``encoder.layers``), which is what every other module relies on.  Checkpoints load from a local
directory or a hub id; ``*ForCTC`` / ``*ForPreTraining`` checkpoints load into the bare encoder.
"""

from __future__ import annotations

import json
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

from speechdistill.models.errors import ModelLoadError

FAMILIES: dict[str, tuple[type[PretrainedConfig], type[nn.Module]]] = {
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
}


def is_local(name_or_path: str | Path) -> bool:
    return Path(name_or_path).exists()


def load_hf_config(name_or_path: str | Path) -> PretrainedConfig:
    """``config.json`` of a directory or hub id, project model types included."""
    from speechdistill.models.registry import PROJECT_MODEL_TYPES, register, register_all

    local = Path(name_or_path) / "config.json"
    if local.is_file():
        # Register only the project type this directory needs: loading a stock HuBERT stays light.
        try:
            model_type = json.loads(local.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None
        if model_type in PROJECT_MODEL_TYPES:
            register(model_type)
    else:
        register_all()
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
    """``hubert`` | ``wavlm`` | ``wav2vec2`` for an HF config (or a pruned config over one)."""
    mt = getattr(config, "model_type", "")
    if mt in FAMILIES:
        return mt
    base = getattr(config, "base_model_type", None)
    if base in FAMILIES:
        return base
    raise ModelLoadError(f"model_type {mt!r} is not a supported encoder family (supported: {', '.join(FAMILIES)})")


def model_class(family: str) -> type[nn.Module]:
    if family not in FAMILIES:
        raise ModelLoadError(f"encoder family {family!r} is not supported (supported: {', '.join(FAMILIES)})")
    return FAMILIES[family][1]


def config_class(family: str) -> type[PretrainedConfig]:
    if family not in FAMILIES:
        raise ModelLoadError(f"encoder family {family!r} is not supported (supported: {', '.join(FAMILIES)})")
    return FAMILIES[family][0]


def wants_normalized_input(name_or_path: str | Path, config: PretrainedConfig) -> bool:
    """HF feature extractors normalise waveforms for layer-norm models; follow the checkpoint's file."""
    pre = Path(name_or_path) / "preprocessor_config.json"
    if pre.is_file():
        try:
            return bool(json.loads(pre.read_text()).get("do_normalize", False))
        except (OSError, ValueError):
            pass
    return getattr(config, "feat_extract_norm", "group") == "layer"


def load_hf_encoder(
    name_or_path: str | Path, config: PretrainedConfig, dtype: torch.dtype | None = None
) -> nn.Module:
    """The bare encoder of a HuBERT/WavLM/wav2vec2 checkpoint (``*ForCTC`` too, head dropped)."""
    cls = model_class(family_of(config))
    # Loading a ForCTC checkpoint into the base class drops the head and keeps the encoder weights.
    try:
        return cls.from_pretrained(str(name_or_path), config=config, dtype=dtype)
    except OSError as e:
        raise ModelLoadError(f"{name_or_path}: could not load weights: {e}") from None
