"""Project model types (config ``model_type`` -> model class), registered with transformers' Auto*.

Each entry is ``model_type: "module:ConfigClass:ModelClass"``; modules import lazily so that loading
a stock HuBERT never imports GenDistiller code.  ``models.auto_classes`` calls
``register_auto_classes`` when transformers' auto module loads after ``import speechdistill``.
"""

from __future__ import annotations

import importlib

from transformers import AutoConfig

PROJECT_MODEL_TYPES: dict[str, str] = {
    "gendistiller": "speechdistill.models.gendistiller:GenDistillerConfig:GenDistillerModel",
    "pruned_encoder": "speechdistill.models.pruned:PrunedEncoderConfig:PrunedEncoderModel",
    "reduced_rate_encoder": "speechdistill.models.edge_frontend:ReducedRateEncoderConfig:ReducedRateEncoder",
}

_registered: set[str] = set()
_auto_model_registered: set[str] = set()


def _split(model_type: str):
    mod, cfg_name, model_name = PROJECT_MODEL_TYPES[model_type].split(":")
    return importlib.import_module(mod), cfg_name, model_name


def register(model_type: str) -> None:
    """AutoConfig only (what reading a config.json needs)."""
    if model_type in _registered:
        return
    module, cfg_name, _ = _split(model_type)
    AutoConfig.register(model_type, getattr(module, cfg_name), exist_ok=True)
    _registered.add(model_type)


def project_model_class(model_type: str):
    module, _, model_name = _split(model_type)
    register(model_type)
    return getattr(module, model_name)


def register_all() -> None:
    for mt in PROJECT_MODEL_TYPES:
        register(mt)


def register_auto_classes() -> None:
    """AutoConfig and AutoModel for every project model type, so ``AutoModel.from_pretrained(dir)``
    returns the same model ``load_encoder(dir)`` does."""
    from transformers import AutoModel

    for model_type in PROJECT_MODEL_TYPES:
        if model_type in _auto_model_registered:
            continue
        module, cfg_name, model_name = _split(model_type)
        register(model_type)
        AutoModel.register(getattr(module, cfg_name), getattr(module, model_name), exist_ok=True)
        _auto_model_registered.add(model_type)
