"""The Hugging Face encoder families this project runs, and loading their checkpoints.

HuBERT, WavLM and wav2vec 2.0 share one layout (CNN ``feature_extractor``, ``feature_projection``,
``encoder.layers``), which is what every other module relies on.  Checkpoints load from a local
directory or a hub id; ``*ForCTC`` / ``*ForPreTraining`` checkpoints load into the bare encoder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def read_config_json(model_dir: str | Path) -> dict:
    """``model_dir/config.json`` as a dict with a ``model_type``; anything else is a ModelLoadError
    naming the file (missing, unreadable, not UTF-8, not JSON, not an object, no model_type)."""
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir} is not a folder (a model directory holds config.json and model.safetensors)")
    if not path.is_file():
        found = ", ".join(sorted(p.name for p in model_dir.iterdir())[:6]) or "nothing"
        raise ModelLoadError(
            f"{path} does not exist: {model_dir} is not a model directory (it holds {found}; a model directory "
            "holds config.json and model.safetensors)"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ModelLoadError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except ValueError as e:
        raise ModelLoadError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise ModelLoadError(f"{path} cannot be read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object of config keys, not a {type(data).__name__}")
    if not isinstance(data.get("model_type"), str) or not data["model_type"]:
        raise ModelLoadError(
            f"{path} has no model_type (e.g. \"hubert\", \"wavlm\", \"wav2vec2\"): not a transformers model config"
        )
    return data


def load_hf_config(name_or_path: str | Path) -> PretrainedConfig:
    """``config.json`` of a directory or hub id, project model types included."""
    from speechdistill.models.registry import PROJECT_MODEL_TYPES, register, register_all

    if is_local(name_or_path):
        model_type = read_config_json(name_or_path)["model_type"]
        if model_type in PROJECT_MODEL_TYPES:
            # Register only the project type this directory needs: loading a stock HuBERT stays light.
            register(model_type)
        elif model_type not in FAMILIES:
            raise ModelLoadError(
                f"{Path(name_or_path) / 'config.json'}: model_type {model_type!r} is not supported "
                f"(supported: {', '.join([*FAMILIES, *PROJECT_MODEL_TYPES])})"
            )
    else:
        register_all()
    try:
        config = AutoConfig.from_pretrained(str(name_or_path))
    except OSError as e:
        if is_local(name_or_path):
            raise ModelLoadError(f"{name_or_path}: not a model directory (no readable config.json): {e}") from None
        raise ModelLoadError(
            f"could not load {name_or_path!r}: it is not a local directory and the hub could not be reached "
            f"or has no such model ({str(e).splitlines()[0]}). Without network access, download the "
            "checkpoint elsewhere and pass its local directory instead."
        ) from None
    except Exception as e:  # noqa: BLE001 - a config class refusing its values (ValueError, TypeError, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"{Path(name_or_path) / 'config.json'}: invalid config ({first})") from None
    where = Path(name_or_path) / "config.json"
    if config.model_type in FAMILIES:
        check_encoder_config(config, where)
    elif config.model_type == "pruned_encoder":
        from speechdistill.models.pruned import PrunedModelError

        try:
            config.validate_shapes()
            base = config.build_base_config()
        except (PrunedModelError, ValueError, TypeError) as e:
            raise ModelLoadError(f"{where}: {e}") from None
        check_encoder_config(base, f"{where} (base_config)")
    return config


def check_encoder_config(config: PretrainedConfig, where: str | Path) -> None:
    """Refuse an HF HuBERT/WavLM/wav2vec2 config that builds a degenerate model: transformers accepts
    ``num_hidden_layers: -3`` and builds an encoder with no layers at all."""
    problems = []
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                "num_conv_pos_embeddings", "num_conv_pos_embedding_groups"):
        value = getattr(config, key, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(f"{key}={value!r} must be an integer >= 1")
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if not problems and isinstance(hidden, int) and isinstance(heads, int) and hidden % heads:
        problems.append(f"hidden_size={hidden} is not divisible by num_attention_heads={heads}")
    conv = [list(getattr(config, k, None) or []) for k in ("conv_dim", "conv_stride", "conv_kernel")]
    if not conv[0] or len({len(c) for c in conv}) != 1:
        problems.append(f"conv_dim, conv_stride and conv_kernel must be non-empty lists of one length, got "
                        f"{[len(c) for c in conv]}")
    elif any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for c in conv for v in c):
        problems.append("conv_dim, conv_stride and conv_kernel must hold integers >= 1")
    if problems:
        raise ModelLoadError(f"{where}: invalid {config.model_type} config: {'; '.join(problems)}")


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
            data = json.loads(pre.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{pre} is unreadable or not JSON ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"{pre} must hold a JSON object, not a {type(data).__name__}")
        # A wrong guess would feed the model differently scaled input: a silently wrong result.
        return bool(data.get("do_normalize", False))
    return getattr(config, "feat_extract_norm", "group") == "layer"


def load_hf_encoder(
    name_or_path: str | Path, config: PretrainedConfig, dtype: torch.dtype | None = None,
    allow_missing: Sequence[str] = (),
) -> nn.Module:
    """The bare encoder of a HuBERT/WavLM/wav2vec2 checkpoint (``*ForCTC`` too, head dropped), loaded
    strictly (``models.weights.load_pretrained``)."""
    from speechdistill.models.weights import load_pretrained

    cls = model_class(family_of(config))
    # Loading a ForCTC checkpoint into the base class drops the head and keeps the encoder weights.
    return load_pretrained(cls, name_or_path, config=config, dtype=dtype, allow_missing=allow_missing)
