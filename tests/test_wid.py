"""WID compactors: exact start, masked LayerNorm, mask schedule, masked decay, merge into stock HF models."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from speechdistill.config import ConfigError
from speechdistill.methods.wid_masks import apply_masked_decay, plan_widths, update_masks
from speechdistill.models.compactor import compactor_encoder_from, masked_layer_norm
from speechdistill.models.compactor_merge import merge_compactors
from speechdistill.models.encoder import hf_encode
from speechdistill.models.factory import tiny_teacher


def _teacher(family, norm="group", **kw):
    shape = {"hidden_size": 64, "num_heads": 4, "intermediate_size": 128, "num_layers": 3, **kw}
    return tiny_teacher(family, norm, seed=3, **shape)


def _padded_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(3, 16000, generator=g) * 0.1
    lengths = torch.tensor([16000, 11000, 6400])
    wav[1, 11000:] = 0
    wav[2, 6400:] = 0
    return wav, lengths


def test_masked_layer_norm_over_all_dims_is_layer_norm_and_over_kept_dims_is_layer_norm_of_them():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 12) * 3 + 1
    w, b = torch.randn(12), torch.randn(12)
    full = masked_layer_norm(x, torch.ones(12, dtype=torch.bool), w, b, 1e-5)
    torch.testing.assert_close(full, F.layer_norm(x, (12,), w, b, 1e-5), rtol=1e-5, atol=1e-5)
    keep = torch.tensor([True, False, True, True, False, True, True, False, True, True, True, False])
    part = masked_layer_norm(x, keep, w, b, 1e-5)[..., keep]
    ref = F.layer_norm(x[..., keep], (int(keep.sum()),), w[keep], b[keep], 1e-5)
    torch.testing.assert_close(part, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family,norm", [("hubert", "group"), ("wavlm", "layer"), ("wav2vec2", "group")])
def test_compactor_model_at_step_zero_is_the_teacher_exactly(family, norm):
    teacher = _teacher(family, norm)
    enc = compactor_encoder_from(teacher.encoder).eval()
    wav, lengths = _padded_batch()
    with torch.no_grad():
        a = teacher(wav, lengths)
        b = enc.encode(wav, lengths)
    assert len(a.hidden_states) == len(b.hidden_states) == 4
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert torch.equal(x, y)
    # the copy is trainable and the teacher still frozen
    assert all(p.requires_grad for p in enc.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())


def _perturb(enc, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


CASES = [
    # family, norm, strategy, hidden, heads, ffn -> merged heads
    ("hubert", "group", "head", 32, 2, 48, 2),
    ("hubert", "layer", "dim", 32, 0, 64, 4),
    ("wav2vec2", "group", "head", 48, 3, 96, 3),
    ("wavlm", "group", "dim", 32, 0, 48, 4),
]


@pytest.mark.parametrize("family,norm,strategy,hidden,heads,ffn,merged_heads", CASES)
def test_merged_stock_model_equals_masked_compactor_model_on_a_padded_batch(
    tmp_path, family, norm, strategy, hidden, heads, ffn, merged_heads
):
    teacher = _teacher(family, norm)
    enc = compactor_encoder_from(teacher.encoder).eval()
    _perturb(enc)
    plan = plan_widths(enc, hidden, ffn, heads, strategy)
    update_masks(enc, plan, update=4, mask_updates=4, attention_updates=4)
    merge_compactors(enc).save_pretrained(tmp_path / "merged")
    stock = AutoModel.from_pretrained(tmp_path / "merged").eval()
    assert type(stock).__name__ == {"hubert": "HubertModel", "wavlm": "WavLMModel", "wav2vec2": "Wav2Vec2Model"}[family]
    c = stock.config
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.num_hidden_layers) == (hidden, merged_heads, ffn, 3)
    wav, lengths = _padded_batch(seed=2)
    with torch.no_grad(), enc.masks.applied():
        ref = enc.encode(wav, lengths)
        got = hf_encode(stock, wav, lengths, normalize=enc.normalize)
    keep = enc.masks.residual
    valid = ref.frame_mask[..., None]
    worst = 0.0
    for x, y in zip(ref.hidden_states, got.hidden_states):
        assert float(x[..., ~keep].abs().max()) == 0.0  # masked residual dims are exactly zero
        diff = ((x[..., keep] - y).abs() * valid).max()
        worst = max(worst, float(diff / y.abs().max()))
    assert worst <= 1e-5, worst


def test_width_plan_refuses_what_a_stock_config_cannot_hold():
    hub = compactor_encoder_from(_teacher("hubert").encoder)
    with pytest.raises(ConfigError, match="multiple of the 4 positional-conv groups"):
        plan_widths(hub, 30, 64, 0, "dim")
    with pytest.raises(ConfigError, match="needs them equal"):
        plan_widths(hub, 32, 64, 3, "head")
    wavlm = compactor_encoder_from(_teacher("wavlm").encoder)
    with pytest.raises(ConfigError, match="cannot remove WavLM heads"):
        plan_widths(wavlm, 32, 64, 2, "head")


def test_masks_grow_linearly_balanced_over_conv_groups_and_follow_compactor_norms():
    enc = compactor_encoder_from(_teacher("hubert").encoder)
    plan = plan_widths(enc, 32, 64, 2, "head")
    col = enc.linears[0]["v"].col
    with torch.no_grad():
        col[:, 5] *= 0.1  # the weakest residual dim goes first
        enc.linears[1]["out"].col[:, 16:32] *= 0.1  # layer 2's head 1 is the weakest
        enc.linears[0]["ffn_out"].col[:, 7] *= 0.1
    kept = []
    for u in range(1, 6):
        update_masks(enc, plan, update=u, mask_updates=4, attention_updates=2)
        kept.append(int(enc.masks.residual.sum()))
        per_group = enc.masks.residual.view(4, -1).sum(1)
        assert bool((per_group == per_group[0]).all())
    assert kept == [56, 48, 40, 32, 32]
    m = enc.masks
    assert not m.residual[5] and not m.ffn[0, 7]
    assert not m.attention[1, 16:32].any() and int(m.attention[1].sum()) == 32
    assert int(m.ffn[0].sum()) == 64


def test_masked_entries_get_the_decay_gradient_and_extra_first_moment():
    enc = compactor_encoder_from(_teacher("hubert").encoder)
    plan = plan_widths(enc, 32, 64, 2, "head")
    update_masks(enc, plan, update=4, mask_updates=4, attention_updates=4)
    targets = list(enc.decay_targets())
    opt = torch.optim.AdamW([p for p, _ in targets], lr=1e-3, betas=(0.9, 0.98))
    for p, _ in targets:
        p.grad = torch.full_like(p, 7.0)
    opt.step()  # creates exp_avg
    for p, _ in targets:
        p.grad = torch.full_like(p, 7.0)
    before = {id(p): opt.state[p]["exp_avg"].clone() for p, _ in targets}
    apply_masked_decay(targets, opt, strength=20.0)
    col = enc.linears[0]["q"].col
    keep = enc.masks.residual
    assert torch.equal(col.grad[:, keep], torch.full_like(col.grad[:, keep], 7.0))
    assert torch.equal(col.grad[:, ~keep], col.detach()[:, ~keep])
    extra = opt.state[col]["exp_avg"] - before[id(col)]
    torch.testing.assert_close(extra[:, ~keep], 0.1 * 19.0 * col.detach()[:, ~keep])
    assert float(extra[:, keep].abs().max()) == 0.0


def test_dropped_layers_merge_exactly_and_wavlm_keeps_its_first_layer(tmp_path):
    teacher = _teacher("wavlm", "group")
    with pytest.raises(ConfigError, match="must keep teacher layer 1"):
        compactor_encoder_from(teacher.encoder, layers=[2, 3])
    enc = compactor_encoder_from(teacher.encoder, layers=[1, 3]).eval()
    _perturb(enc, seed=4)
    update_masks(enc, plan_widths(enc, 32, 64, 0, "dim"), update=1, mask_updates=1, attention_updates=1)
    merged = merge_compactors(enc)
    assert merged.config.num_hidden_layers == 2
    wav, lengths = _padded_batch(seed=5)
    with torch.no_grad(), enc.masks.applied():
        ref = enc.encode(wav, lengths)
        got = merged.encode(wav, lengths)
    keep = enc.masks.residual
    for x, y in zip(ref.hidden_states, got.hidden_states):
        diff = ((x[..., keep] - y).abs() * ref.frame_mask[..., None]).max()
        assert float(diff / y.abs().max()) <= 1e-5
