"""Project model types (config ``model_type`` -> model class), registered with transformers' Auto*.

Each entry is ``model_type: "module:ConfigClass:ModelClass"``; modules import lazily so that loading
a stock HuBERT never imports GenDistiller code.
"""

from __future__ import annotations

import importlib

from transformers import AutoConfig

PROJECT_MODEL_TYPES: dict[str, str] = {
    "gendistiller": "speechdistill.models.gendistiller:GenDistillerConfig:GenDistillerModel",
    "pruned_encoder": "speechdistill.models.pruned:PrunedEncoderConfig:PrunedEncoderModel",
    "reduced_rate_encoder": "speechdistill.models.frontend:ReducedRateEncoderConfig:ReducedRateEncoder",
}

_registered: set[str] = set()


def _split(model_type: str):
    mod, cfg_name, model_name = PROJECT_MODEL_TYPES[model_type].split(":")
    return importlib.import_module(mod), cfg_name, model_name


def register(model_type: str) -> None:
    if model_type in _registered:
        return
    module, cfg_name, _ = _split(model_type)
    try:
        AutoConfig.register(model_type, getattr(module, cfg_name))
    except ValueError:
        pass  # already registered by another import path
    _registered.add(model_type)


def project_model_class(model_type: str):
    module, _, model_name = _split(model_type)
    register(model_type)
    return getattr(module, model_name)


def register_all() -> None:
    for mt in PROJECT_MODEL_TYPES:
        register(mt)
