"""``load_encoder``: the one function that turns any encoder spec into a model with the encoder
contract (``models.protocol.Encoder``), and ``load_teacher`` around it.

Specs:

- a local directory: HF HuBERT/WavLM/wav2vec2 (``*ForCTC`` too, head dropped), a project student
  (GenDistiller, pruned encoder), or a CTC model directory (from ``finetune-ctc``: its encoder);
- a hub id (``facebook/hubert-base-ls960``), when the hub is reachable;
- ``builtin:NAME``: a model shipped in the package (``builtin:reference``);
- ``tiny:FAMILY[-layer]``: a tiny random encoder (tests, smoke runs), e.g. ``tiny:hubert``, ``tiny:wavlm-layer``;
- ``random:FAMILY``: a random encoder of a preset shape plus HF config overrides (training from scratch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechdistill.models.builtin import PREFIX as BUILTIN_PREFIX
from speechdistill.models.builtin import resolve_model_path
from speechdistill.models.encoder import HFEncoder
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.hf import FAMILIES, load_hf_config, load_hf_encoder, wants_normalized_input
from speechdistill.models.registry import PROJECT_MODEL_TYPES, project_model_class
from speechdistill.models.teacher import Teacher
from speechdistill.models.weights import load_pretrained

TINY_PREFIX = "tiny:"
RANDOM_PREFIX = "random:"
CTC_CONFIG_FILE = "ctc_config.json"
CTC_ENCODER_DIR = "encoder"


def is_random_spec(spec: str) -> bool:
    return str(spec).startswith(RANDOM_PREFIX)


def load_encoder(
    spec: str | Path,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    config_overrides: dict[str, Any] | None = None,
    allow_missing: Sequence[str] = (),
) -> nn.Module:
    """An encoder from any spec (see the module doc).  ``seed`` and ``config_overrides`` apply to
    ``tiny:``/``random:`` specs only.

    Checkpoints load strictly (``models.weights``): a missing, unexpected or mis-shaped tensor, or a
    NaN/Inf weight, is a ModelLoadError naming them.  ``allow_missing``: ``fnmatch`` patterns of tensors
    the caller expects to be new (initialised fresh), e.g. a head added to a pretrained body."""
    from speechdistill.models.factory import random_encoder, tiny_encoder

    spec = str(spec)
    if config_overrides and not is_random_spec(spec):
        raise ModelLoadError(f"config overrides only apply to random:FAMILY encoders, not {spec!r}")
    if spec.startswith(TINY_PREFIX):
        family, _, norm = spec[len(TINY_PREFIX):].partition("-")
        if family not in FAMILIES or norm not in ("", "group", "layer"):
            raise ModelLoadError(f"{spec!r}: expected tiny:FAMILY or tiny:FAMILY-layer, FAMILY one of {', '.join(FAMILIES)}")
        return tiny_encoder(family, norm or "group", seed=seed)
    if is_random_spec(spec):
        return random_encoder(spec[len(RANDOM_PREFIX):], config_overrides, seed)
    path = resolve_model_path(spec) if spec.startswith(BUILTIN_PREFIX) else spec
    if is_missing_local(path):
        raise ModelLoadError(f"model directory {path} does not exist")
    # A CTC model directory (finetune-ctc output) holds its encoder in encoder/.
    if (Path(path) / CTC_CONFIG_FILE).is_file() and (Path(path) / CTC_ENCODER_DIR).is_dir():
        path = str(Path(path) / CTC_ENCODER_DIR)
    config = load_hf_config(path)
    if config.model_type in PROJECT_MODEL_TYPES:
        cls = project_model_class(config.model_type)
        return load_pretrained(cls, path, config=config, dtype=dtype, allow_missing=allow_missing)
    if config.model_type in FAMILIES:
        return HFEncoder(load_hf_encoder(path, config, dtype, allow_missing),
                         normalize=wants_normalized_input(path, config))
    raise ModelLoadError(
        f"{path}: model_type {config.model_type!r} is not supported "
        f"(supported: {', '.join([*FAMILIES, *PROJECT_MODEL_TYPES])})"
    )


def load_teacher(spec: str | Path, dtype: torch.dtype | None = None, seed: int = 0) -> Teacher:
    """A frozen teacher from any encoder spec; ``source`` keeps the spec as the user wrote it."""
    return Teacher(load_encoder(spec, dtype=dtype, seed=seed), source=str(spec))


def is_missing_local(name_or_path: str | Path) -> bool:
    """A path-like argument (absolute, ./relative, or with a separator we can't read as org/name)."""
    s = str(name_or_path)
    looks_like_path = s.startswith(("/", "./", "../", "~")) or s.count("/") > 1 or s.endswith("/")
    return looks_like_path and not Path(s).expanduser().exists()
