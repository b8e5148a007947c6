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

A shorter positional conv (``pos_conv_kernel``) is a front-end design option for small students: at
the demo shape (192 channels, 16 groups, kernel 64) the positional conv holds 148k parameters, a
fifth of a one-layer DistilHuBERT.  It starts as the centre taps of the teacher's kernel (weight norm
is per tap, so the cropped weight is exactly the teacher's centre taps); x0 cosine to the teacher's at
initialisation, reference teacher, digits: kernel 32 0.959, kernel 16 0.876.
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers import PretrainedConfig

log = logging.getLogger(__name__)

FEATURE_NORM_KEYS = ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias")


def has_feature_norm_switch(config: PretrainedConfig) -> bool:
    """Only HF HuBERT can drop the LayerNorm before its feature projection."""
    return getattr(config, "model_type", "") == "hubert"


def student_hf_config(
    teacher_config: PretrainedConfig, num_layers: int, feat_proj_layer_norm: bool = False, pos_conv_kernel: int = 0
) -> PretrainedConfig:
    """The teacher's HF config for a student with ``num_layers`` layers, layerdrop 0, (HuBERT only)
    the feature-projection LayerNorm kept or dropped, and optionally a shorter positional conv."""
    cfg = copy.deepcopy(teacher_config)
    cfg.num_hidden_layers = num_layers
    cfg.layerdrop = 0.0
    set_pos_conv_kernel(cfg, pos_conv_kernel)
    if has_feature_norm_switch(cfg):
        cfg.feat_proj_layer_norm = bool(feat_proj_layer_norm)
    elif not feat_proj_layer_norm:
        log.info("%s feature projections always normalise: the student keeps that LayerNorm",
                 getattr(cfg, "model_type", "this family's"))
    return cfg


def set_pos_conv_kernel(config: PretrainedConfig, kernel: int) -> None:
    """A positional conv of ``kernel`` taps (0 = keep the teacher's)."""
    if kernel:
        if kernel > config.num_conv_pos_embeddings:
            raise ValueError(f"pos_conv_kernel {kernel} is longer than the teacher's {config.num_conv_pos_embeddings}")
        config.num_conv_pos_embeddings = int(kernel)


def _centre_taps(t: torch.Tensor, taps: int) -> torch.Tensor:
    off = (t.shape[-1] - taps) // 2
    return t[..., off : off + taps]


def frontend_state_from_teacher(teacher_state: dict, student_state: dict) -> dict:
    """The teacher tensors for every key of the student's ``student_state`` (HF names on both sides).

    A student without the feature LayerNorm simply has no such keys; its projection is the teacher's,
    copied unchanged.  A shorter positional conv gets the teacher kernel's centre taps (module doc)."""
    missing = sorted(k for k in student_state if k not in teacher_state)
    if missing:
        raise ValueError(f"the teacher has no weights for student front-end keys {missing[:5]}")
    out = {}
    for k, v in student_state.items():
        t = teacher_state[k]
        if t.shape != v.shape and "pos_conv_embed" in k and t.shape[:-1] == v.shape[:-1] and t.shape[-1] > v.shape[-1]:
            t = _centre_taps(t, v.shape[-1])
        if t.shape != v.shape:
            raise ValueError(f"mismatched {k}: teacher {tuple(t.shape)} vs student {tuple(v.shape)}")
        out[k] = t
    return out
