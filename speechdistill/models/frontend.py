"""Student front ends taken from a teacher: the CNN, the feature projection and the positional conv.

DistilHuBERT's published student (s3prl ``upstream/distiller``; the HF checkpoint
``ntu-spml/distilhubert`` sets ``feat_proj_layer_norm: false``) has no LayerNorm on the CNN features
before the feature projection, although its HuBERT teacher has one.  Students of HuBERT-family
teachers follow it by default (``feat_proj_layer_norm=False``); HF's WavLM and wav2vec 2.0 feature
projections always normalise, so the switch only exists for HuBERT.

Initialising the projection without the LayerNorm: s3prl copies the teacher's projection weights
unchanged, and so do we.  Folding the LayerNorm in instead (its gain and bias, the per-frame centring,
which is linear, and a constant for the per-frame 1/std) was measured and does not pay: the per-frame
std of the CNN features ranges 0.016-7.8 between silence and speech (mean 1.11, sd 1.25; reference
teacher, 24 utterances of synthetic digits), so no fixed linear map reproduces the LayerNorm.  Cosine
of the student's x0 to the teacher's at initialisation: copy 0.732, fold 0.733, fold with a
least-squares scale fitted on audio 0.747; of the first copied layer: 0.794, 0.784, 0.797.  Training
recovers the rest (the CNN and projection are trained, the encoder LayerNorm after the positional conv
normalises every frame again).
"""

from __future__ import annotations

import copy
import logging

from transformers import PretrainedConfig

log = logging.getLogger(__name__)

FEATURE_NORM_KEYS = ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias")


def has_feature_norm_switch(config: PretrainedConfig) -> bool:
    """Only HF HuBERT can drop the LayerNorm before its feature projection."""
    return getattr(config, "model_type", "") == "hubert"


def student_hf_config(
    teacher_config: PretrainedConfig, num_layers: int, feat_proj_layer_norm: bool = False
) -> PretrainedConfig:
    """The teacher's HF config for a student with ``num_layers`` layers, layerdrop 0, and (HuBERT only)
    the feature-projection LayerNorm kept or dropped."""
    cfg = copy.deepcopy(teacher_config)
    cfg.num_hidden_layers = num_layers
    cfg.layerdrop = 0.0
    if has_feature_norm_switch(cfg):
        cfg.feat_proj_layer_norm = bool(feat_proj_layer_norm)
    elif not feat_proj_layer_norm:
        log.info("%s feature projections always normalise: the student keeps that LayerNorm",
                 getattr(cfg, "model_type", "this family's"))
    return cfg


def frontend_state_from_teacher(teacher_state: dict, student_keys) -> dict:
    """The teacher tensors for every front-end key of the student (names are the HF ones on both sides).

    A student without the feature LayerNorm simply has no such keys; its projection is the teacher's,
    copied unchanged (see the module doc)."""
    missing = sorted(k for k in student_keys if k not in teacher_state)
    if missing:
        raise ValueError(f"the teacher has no weights for student front-end keys {missing[:5]}")
    return {k: teacher_state[k] for k in student_keys}
