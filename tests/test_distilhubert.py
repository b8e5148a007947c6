"""DistilHuBERT is the reference recipe (s3prl ``pretrain/distiller``): heads, loss, front end, sizes.

The reference definitions are written out independently here (from s3prl's DistillerModel with
``out_layer_type: expand-last`` and DistillerForPretrain.compute_loss) and compared on fixed tensors."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from transformers import HubertModel

from speechdistill.methods.distilhubert import (
    DistilHuBERTConfig,
    DistilHuBERTStudent,
    PredictionHeads,
    build_student,
)
from speechdistill.methods.losses import multi_layer_loss
from speechdistill.models.encoder import HFEncoder
from speechdistill.models.factory import base_config, tiny_encoder
from speechdistill.models.frames import frame_mask
from speechdistill.models.frontend import student_hf_config
from speechdistill.models.gendistiller import GenDistillerConfig, GenDistillerModel, frontend_config_dict
from speechdistill.models.size import student_parameters
from speechdistill.models.teacher import Teacher


@functools.cache
def _teacher() -> Teacher:
    return Teacher(tiny_encoder("hubert", "group", seed=0, num_layers=4), source="tiny")


def reference_expand_last(x, w_expand, b_expand, w_split, b_split):
    """s3prl: Linear(d, inter*N) -> GELU -> SplitLinear(inter, N, d_out); returns [B, N, T, d_out]."""
    B, T, _ = x.shape
    N, inter, _ = w_split.shape
    h = F.gelu(x @ w_expand.T + b_expand)  # B x T x N*inter
    h = h.reshape(B, T, N, 1, inter)
    out = torch.einsum("...klm,kmn->...kln", h, w_split).squeeze(3) + b_split  # B x T x N x d_out
    return out.permute(0, 2, 1, 3)


def reference_loss(pred, target, cos_weight=1.0):
    """s3prl compute_loss: mean L1 over B x N x T x D + cos_weight * mean(-log sigmoid(cos)) over B x N x T."""
    rec = (pred - target).abs().mean()
    sim = -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean()
    return rec + cos_weight * sim


@torch.no_grad()
def test_heads_and_loss_equal_the_reference_definitions():
    g = torch.Generator().manual_seed(0)
    B, T, d, d_out, N = 2, 9, 16, 12, 3
    heads = PredictionHeads(d, d_out, N, "expand-last")
    for p in heads.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    x = torch.randn(B, T, d, generator=g)
    targets = torch.randn(B, N, T, d_out, generator=g)
    ours = torch.stack(heads(x), 1)
    w_split = torch.stack([h.weight.T for h in heads.out])  # [N, inter, d_out] (s3prl's layout)
    b_split = torch.stack([h.bias for h in heads.out])[None, None]  # [1, 1, N, d_out]
    ref = reference_expand_last(x, heads.expand.weight, heads.expand.bias, w_split, b_split)
    assert ours.shape == ref.shape == (B, N, T, d_out)
    assert (ours - ref).abs().max() < 1e-6
    mask = torch.ones(B, T, dtype=torch.bool)  # the reference has no padding
    loss, metrics = multi_layer_loss(list(ours.unbind(1)), list(targets.unbind(1)), [4, 8, 12], mask, 1.0)
    assert abs(float(loss) - float(reference_loss(ref, targets))) < 1e-6
    assert set(metrics) >= {"l1_L4", "cos_L8", "loss_L12"}
    # The mean, not the sum: three identical targets give the one-target loss.
    one, _ = multi_layer_loss([ours[:, 0]], [targets[:, 0]], [4], mask)
    three, _ = multi_layer_loss([ours[:, 0]] * 3, [targets[:, 0]] * 3, [4, 8, 12], mask)
    assert abs(float(three) - float(one)) < 1e-6


def test_head_parameter_counts_match_the_formula():
    d, d_out = 24, 20
    for K in (1, 2, 3):
        for inter in (0, 10):
            heads = PredictionHeads(d, d_out, K, "expand-last", inter)
            i = inter or d
            assert sum(p.numel() for p in heads.parameters()) == (d * i * K + i * K) + K * (i * d_out + d_out)
        linear = PredictionHeads(d, d_out, K, "linear")
        assert sum(p.numel() for p in linear.parameters()) == K * (d * d_out + d_out)
    with pytest.raises(ValueError, match="head type"):
        PredictionHeads(d, d_out, 2, "mlp")


def test_base_shape_counts_and_gendistiller_budget():
    """Reference sizes at HuBERT Base shape (random weights): encoder 23.49M, expand-last heads 3.54M for
    K = 3; GenDistiller (targets 4, 8, 12) <= 67 % of DistilHuBERT's encoder."""
    tcfg = base_config("hubert")
    torch.manual_seed(0)
    encoder = HFEncoder(HubertModel(student_hf_config(tcfg, 2, feat_proj_layer_norm=False)))
    dh = DistilHuBERTStudent(encoder, PredictionHeads(768, 768, 3, "expand-last"), [4, 8, 12])
    size = student_parameters(dh)
    assert round(size.encoder / 1e6, 2) == 23.49 and size.heads == 3_543_552
    assert not hasattr(encoder.model.feature_projection, "layer_norm")
    linear = student_parameters(DistilHuBERTStudent(encoder, PredictionHeads(768, 768, 3, "linear"), [4, 8, 12]))
    assert linear.heads == 1_771_776
    gen = GenDistillerModel(GenDistillerConfig(frontend_config=frontend_config_dict(tcfg)))
    g = student_parameters(gen)
    assert g.heads == 0
    print(f"GenDistiller {g.encoder:,}  DistilHuBERT {size.encoder:,} + heads {size.heads:,}: "
          f"ratio {g.ratio(size):.3f}, with heads {g.ratio_with_heads(size):.3f}")
    assert g.ratio(size) <= 0.67


def test_student_init_switches_and_record():
    teacher = _teacher()
    t_layers = teacher.encoder.model.encoder.layers
    s, rec = build_student(teacher, DistilHuBERTConfig(student_layers=1, targets=[2, 4], init_layers=[3]))
    assert rec["layers"] == "teacher layers [3]" and rec["feat_proj_layer_norm"] is False
    assert torch.equal(s.encoder.model.encoder.layers[0].attention.q_proj.weight, t_layers[2].attention.q_proj.weight)
    assert torch.equal(s.encoder.model.feature_projection.projection.weight,
                       teacher.encoder.model.feature_projection.projection.weight)
    torch.manual_seed(0)
    r, rec = build_student(teacher, DistilHuBERTConfig(student_layers=1, targets=[2, 4], layer_init="random"))
    assert rec["layers"] == "random" and rec["front_end"] == "teacher"
    assert not torch.equal(r.encoder.model.encoder.layers[0].attention.q_proj.weight, t_layers[0].attention.q_proj.weight)
    assert torch.equal(r.encoder.model.encoder.pos_conv_embed.conv.bias, teacher.encoder.model.encoder.pos_conv_embed.conv.bias)
    with pytest.raises(ValueError, match="init_layers"):
        DistilHuBERTConfig(student_layers=2, init_layers=[1]).validate()


@torch.no_grad()
def test_student_forward_gives_one_prediction_per_target():
    s, _ = build_student(_teacher(), DistilHuBERTConfig(student_layers=1, targets=[2, 4]))
    s.eval()
    wav, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    out, preds = s(wav, lengths)
    assert len(preds) == 2 and preds[0].shape == out.hidden_states[-1].shape
    assert out.frame_mask.tolist() == frame_mask(out.frame_lengths, preds[0].shape[1]).tolist()
