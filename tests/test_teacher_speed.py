"""The cheap teacher forward: inference mode with the student still learning, layers above the deepest
target never run, no attention mask when nothing is padded, bf16, and the on-disk target cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechdistill.config import ConfigError
from speechdistill.data.batch import Batch
from speechdistill.methods.distilhubert import DistilHuBERTConfig, DistilHuBERTMethod
from speechdistill.methods.gendistiller import GenDistillerMethod, GenDistillerMethodConfig
from speechdistill.methods.speed import SpeedConfig
from speechdistill.models.encoder import hf_model_of
from speechdistill.models.factory import tiny_teacher
from speechdistill.models.teacher_forward import configure_teacher


def _method(kind: str, targets, speed: SpeedConfig | None = None, **teacher_kw):
    torch.manual_seed(0)
    teacher = tiny_teacher(num_layers=4, **teacher_kw)
    if kind == "distilhubert":
        method = DistilHuBERTMethod(teacher, DistilHuBERTConfig(student_layers=1, targets=targets))
    else:
        method = GenDistillerMethod(teacher, GenDistillerMethodConfig(
            targets=targets, decoder_heads=4, decoder_ffn_dim=64, dropout=0.0))
    if speed is not None:
        method.speed = speed
    method.setup(torch.device("cpu"))
    model = method.prepare_model(method.build_model().train())
    return method, model


def _batch(lengths=(8000, 8000), seed=0, ids=None, offsets=None):
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(len(lengths), max(lengths), generator=g) * 0.1
    for i, n in enumerate(lengths):
        wav[i, n:] = 0
    ids = ids or [f"u{i}" for i in range(len(lengths))]
    return Batch(wav, torch.tensor(lengths), ids, [None] * len(lengths), [],
                 None if offsets is None else torch.tensor(offsets))


def _count_layer_calls(method):
    layers = hf_model_of(method.teacher).encoder.layers
    counts = [0] * len(layers)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda *_a, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


@pytest.mark.parametrize("kind", ["distilhubert", "gendistiller"])
def test_teacher_never_runs_layers_above_the_deepest_target(kind):
    method, model = _method(kind, [1, 2])
    counts = _count_layer_calls(method)
    loss, _ = method.compute_loss(model, _batch((8000, 6000)), 0)
    loss.backward()
    method.compute_loss_eval(model, _batch())
    assert counts == [2, 2, 0, 0]


@pytest.mark.parametrize("kind", ["distilhubert", "gendistiller"])
def test_inference_mode_teacher_still_trains_the_student(kind):
    method, model = _method(kind, [2, 4])
    batch = _batch((8000, 5000))
    out = method.teacher(batch.wav, batch.lengths, upto_layer=4)
    assert out.hidden_states[4].is_inference()
    targets, _, _ = method.teacher_targets(batch)
    assert not any(t.is_inference() for t in targets) and all(t.dtype == torch.float32 for t in targets)
    loss, _ = method.compute_loss(model, batch, 0)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.isfinite().all() for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


def test_unpadded_batches_reach_sdpa_without_a_mask(monkeypatch):
    method, _ = _method("distilhubert", [2])
    assert method.teacher_settings["attention"] == "sdpa"
    masks = []
    real = F.scaled_dot_product_attention

    def spy(*a, **kw):
        masks.append(kw.get("attn_mask"))
        return real(*a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    method.teacher_targets(_batch((8000, 8000)))
    assert len(masks) == 2 and all(m is None for m in masks)
    masks.clear()
    method.teacher_targets(_batch((8000, 6000)))
    assert len(masks) == 2 and all(m is not None for m in masks)


def test_bf16_teacher_gives_fp32_targets_close_to_fp32():
    # Width 64, not the default 32: oneDNN's bf16 grouped conv1d is wrong on this CPU (AMX) for 8 channels
    # per group with kernel 16 (relative error ~0.5; 16 channels per group and the Base shape are right).
    wide = {"hidden_size": 64, "intermediate_size": 128}
    ref, _ = _method("distilhubert", [2, 4], **wide)
    fast, student = _method("distilhubert", [2, 4], SpeedConfig(teacher_dtype="bf16"), **wide)
    assert next(fast.teacher.parameters()).dtype == torch.bfloat16
    # The student copied the teacher's weights before the cast: fp32, not rounded to bf16.
    s_w = student.encoder.model.encoder.layers[0].feed_forward.intermediate_dense.weight
    t_w = hf_model_of(ref.teacher).encoder.layers[0].feed_forward.intermediate_dense.weight
    assert s_w.dtype == torch.float32 and torch.equal(s_w, t_w)
    batch = _batch((8000, 6400))
    for a, b in zip(fast.teacher_targets(batch)[0], ref.teacher_targets(batch)[0]):
        assert a.dtype == torch.float32
        mask = ref.teacher_targets(batch)[2]
        rel = float((a - b)[mask].norm() / b[mask].norm())
        assert rel < 0.03, rel  # bf16 keeps ~3 significant digits


def test_unavailable_attention_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match="flash_attention_2"):
        configure_teacher(tiny_teacher(), "cpu", attention="flash_attention_2")


def test_target_cache_is_exact_per_crop_and_skips_the_teacher(tmp_path):
    speed = SpeedConfig(teacher_cache_dir=str(tmp_path / "cache"))
    method, model = _method("distilhubert", [2, 4], speed)
    counts = _count_layer_calls(method)
    batch = _batch((8000, 6400), ids=["a", "b"], offsets=[0, 1600])
    live, lengths, mask = method.teacher_targets(batch)
    assert counts[:4] == [1, 1, 1, 1]
    # A second process (another student, a later epoch) reads the same entries back from disk.
    again, _ = _method("distilhubert", [2, 4], speed)
    counts2 = _count_layer_calls(again)
    cached, lengths2, mask2 = again.teacher_targets(batch)
    assert counts2 == [0, 0, 0, 0] and again.cache.hits == 1
    assert torch.equal(lengths2, lengths) and torch.equal(mask2, mask)
    for c, t in zip(cached, live):
        assert c.dtype == torch.float32
        torch.testing.assert_close(c[mask], t[mask].half().float(), rtol=0, atol=0)
    # Another crop of utterance b is another entry: the teacher runs.
    again.teacher_targets(_batch((8000, 6400), ids=["a", "b"], offsets=[0, 3200]))
    assert counts2 == [1, 1, 1, 1]
    loss, _ = again.compute_loss(model, batch, 0)
    loss.backward()
    # A cache made for other layers is refused, not reused.
    with pytest.raises(ConfigError, match="another teacher"):
        _method("distilhubert", [1, 4], speed)


def test_cache_estimate_counts_frames_and_warns_about_crops():
    from speechdistill.methods.teacher_cache import estimate_cache

    cfg = tiny_teacher().config
    est = estimate_cache([16000, 32000, 8000], 16000, cfg, num_layers=3, hidden=768)
    assert est.cropped == 1
    assert est.bytes_per_epoch == (49 + 49 + 24) * 3 * 768 * 2
    assert "longer than data.crop_seconds" in est.describe(3, 768)


def test_distill_prints_the_cache_cost_and_refuses_it_over_the_limit(tone_corpus, tmp_path, caplog):
    from speechdistill.config import load_config
    from speechdistill.run.distill import DistillConfig, run_distill

    cfg = load_config(DistillConfig, "tiny_cpu", [
        "method=distilhubert", "teacher=tiny:hubert", f"data.train_manifest={tone_corpus['train']}",
        "data.dev_manifest=null", "distilhubert.targets=[2,4]", "data.crop_seconds=0",
        f"speed.teacher_cache_dir={tmp_path / 'cache'}", "speed.teacher_cache_max_gb=1e-6", f"out_dir={tmp_path / 'o'}",
    ])
    with caplog.at_level("INFO"), pytest.raises(ConfigError, match="teacher_cache_max_gb"):
        run_distill(cfg)
    assert "teacher target cache: 24 utterances x 2 layers x 32 x fp16" in caplog.text
    assert not (tmp_path / "o" / "checkpoints").exists()
