"""Block-structured 2-D attention (per-step SDPA, FlexAttention) equals the dense ``dense_grid_mask`` SDPA path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechdistill.models.attention2d import dense_grid_mask
from speechdistill.models.block_attention import (
    block_grid_attention,
    flex_grid_attention,
    key_step_range,
    set_grid_attention,
    steps_attention,
)
from speechdistill.models.factory import tiny_encoder
from speechdistill.models.frames import frame_mask
from speechdistill.models.gendistiller import GenDistillerModel


def dense(q, k, v, kind, q_start, kv_start, valid):
    B, H, Sq, T, d = q.shape
    Skv = k.shape[2]
    m = dense_grid_mask(kind, q_start, Sq, kv_start, Skv, valid)
    o = F.scaled_dot_product_attention(
        q.reshape(B, H, Sq * T, d), k.reshape(B, H, Skv * T, d), v.reshape(B, H, Skv * T, d), attn_mask=m
    )
    return o.view(B, H, Sq, T, d)


def qkv(Sq=3, Skv=3, T=9, B=2, H=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, s, T, d, generator=g, dtype=torch.float64) for s in (Sq, Skv, Skv)]


# (q_start, Sq, kv_start, Skv): the parallel training pass, and cached decoding (one new step, keys
# from a cache that starts at step 0 or, for "previous", at step0 - 1).
LAYOUTS = [(0, 3, 0, 3), (0, 4, 0, 4), (2, 1, 0, 3), (3, 1, 2, 2), (0, 1, 0, 1)]
LENGTHS = [(9, 9), (9, 5), (4, 9)]


@pytest.mark.parametrize("kind", ["full", "previous"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("lengths", LENGTHS)
def test_steps_and_flex_equal_dense(kind, layout, lengths):
    q_start, Sq, kv_start, Skv = layout
    q, k, v = qkv(Sq, Skv)
    valid = frame_mask(torch.tensor(lengths), 9)
    # Padded query frames are discarded downstream, and the implementations may fill them differently.
    keep = valid[:, None, None, :, None].to(q.dtype)
    ref = dense(q, k, v, kind, q_start, kv_start, valid) * keep
    got = steps_attention(q, k, v, kind, q_start, kv_start, valid) * keep
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    # The FlexAttention mask function (the GPU path), checked eagerly on CPU.
    got = flex_grid_attention(q.float(), k.float(), v.float(), kind, q_start, kv_start, valid, compiled=False)
    torch.testing.assert_close(got.double() * keep, ref, rtol=0, atol=1e-5)


def test_gradients_equal_dense():
    q, k, v = (t.requires_grad_() for t in qkv(4, 4))
    valid = frame_mask(torch.tensor([9, 6]), 9)
    grads = []
    keep = valid[:, None, None, :, None].to(q.dtype)  # losses only read valid frames
    for fn in (dense, steps_attention):
        out = fn(q, k, v, "full", 0, 0, valid) * keep
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, 8, dtype=out.dtype)).sum(), (q, k, v)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_key_step_ranges():
    assert [key_step_range("full", s, 0, 4) for s in range(4)] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert [key_step_range("previous", s, 0, 4) for s in range(4)] == [(0, 1), (0, 2), (1, 3), (2, 4)]
    assert key_step_range("previous", 3, 2, 2) == (0, 2)  # cache trimmed to steps 2..3
    with pytest.raises(ValueError, match="axial"):
        key_step_range("axial", 0, 0, 1)


def test_unpadded_steps_pass_no_mask(monkeypatch):
    """No padding: SDPA gets attn_mask=None, so its fused kernels run."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(*a, **kw):
        seen.append(kw.get("attn_mask"))
        return real(*a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = qkv()
    block_grid_attention(q, k, v, "full", 0, 0, torch.ones(2, 9, dtype=torch.bool), impl="steps")
    assert len(seen) == 3 and all(m is None for m in seen)


@pytest.mark.parametrize("kind", ["full", "previous"])
@torch.no_grad()
def test_gendistiller_with_block_attention_equals_dense(kind):
    torch.manual_seed(0)
    teacher = tiny_encoder("hubert", "group", seed=0, num_layers=4)
    m = GenDistillerModel.from_teacher(teacher, target_layers=[1, 2, 4], mask=kind, decoder_layers=2,
                                       dropout=0.0).eval()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 7, m.hidden_size, generator=g)
    tl = torch.randn(2, 3, 7, m.hidden_size, generator=g)
    fl = torch.tensor([7, 5])
    ref_tf, ref_gen = m.forward_teacher_forced(x0, tl, fl), m.generate(x0, fl)
    assert set_grid_attention(m, "steps") == 2
    torch.testing.assert_close(m.forward_teacher_forced(x0, tl, fl), ref_tf, rtol=0, atol=1e-5)
    torch.testing.assert_close(m.generate(x0, fl), ref_gen, rtol=0, atol=1e-5)
    set_grid_attention(m, "dense")
    torch.testing.assert_close(m.forward_teacher_forced(x0, tl, fl), ref_tf, rtol=0, atol=1e-5)
    set_grid_attention(m, "native")
    torch.testing.assert_close(m.forward_teacher_forced(x0, tl, fl), ref_tf, rtol=0, atol=0)
