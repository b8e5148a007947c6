"""``load_encoder``: any encoder directory or hub id -> a module with the project encoder interface."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from speechdistill.models.encoder import HFEncoder
from speechdistill.models.registry import PROJECT_MODEL_TYPES, project_model_class
from speechdistill.models.teacher import (
    FAMILIES,
    ModelLoadError,
    load_base_encoder,
    load_config,
    wants_normalized_input,
)


def load_encoder(name_or_path: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """HF HuBERT/WavLM/wav2vec2 (incl. ``*ForCTC``), GenDistiller students and pruned encoders;
    ``builtin:NAME`` for models shipped in the package; a CTC model directory gives its encoder."""
    from speechdistill.models.builtin import resolve_model_path

    name_or_path = resolve_model_path(str(name_or_path))
    if is_missing_local(name_or_path):
        raise ModelLoadError(f"model directory {name_or_path} does not exist")
    # A CTC model directory (finetune-ctc output) holds its encoder in encoder/.
    if (Path(name_or_path) / "ctc_config.json").is_file() and (Path(name_or_path) / "encoder").is_dir():
        name_or_path = Path(name_or_path) / "encoder"
    config = load_config(name_or_path)
    if config.model_type in PROJECT_MODEL_TYPES:
        cls = project_model_class(config.model_type)
        try:
            model = cls.from_pretrained(str(name_or_path), dtype=dtype)
        except OSError as e:
            raise ModelLoadError(f"{name_or_path}: could not load weights: {e}") from None
        return model
    if config.model_type in FAMILIES:
        model = load_base_encoder(name_or_path, dtype=dtype)
        return HFEncoder(model, normalize=wants_normalized_input(name_or_path, config))
    raise ModelLoadError(
        f"{name_or_path}: model_type {config.model_type!r} is not supported "
        f"(supported: {', '.join([*FAMILIES, *PROJECT_MODEL_TYPES])})"
    )


def is_missing_local(name_or_path: str | Path) -> bool:
    """A path-like argument (absolute, ./relative, or with a separator we can't read as org/name)."""
    s = str(name_or_path)
    looks_like_path = s.startswith(("/", "./", "../", "~")) or s.count("/") > 1 or s.endswith("/")
    return looks_like_path and not Path(s).expanduser().exists()
