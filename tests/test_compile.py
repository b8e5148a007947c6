"""``train.compile``: a compiled student equals the eager one (outputs and gradients), and bucketed batch
lengths do not recompile per batch."""

from __future__ import annotations

import pytest
import torch

from speechdistill.methods.distilhubert import DistilHuBERTConfig, DistilHuBERTMethod
from speechdistill.models.factory import tiny_teacher
from speechdistill.train.compile import apply_compile, compile_regions


def _student():
    torch.manual_seed(0)
    method = DistilHuBERTMethod(tiny_teacher(num_layers=2), DistilHuBERTConfig(student_layers=2, targets=[1, 2]))
    return method, method.build_model().train()


def _fwd_bwd(model, wav, lengths):
    model.zero_grad(set_to_none=True)
    _, preds = model(wav, lengths)
    loss = sum((p * torch.linspace(-1, 1, p.shape[-1])).sum() for p in preds)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [p.detach() for p in preds], grads


def test_inductor_compiled_layers_equal_eager(monkeypatch):
    """Inductor (C++ codegen through gcc) on the transformer layers: same outputs and gradients."""
    import torch._inductor.config as inductor_config

    # No pool of compile workers: on a 2-core box starting it costs more than it saves.
    monkeypatch.setattr(inductor_config, "compile_threads", 1)
    _, model = _student()
    wav, lengths = torch.randn(2, 4000) * 0.1, torch.tensor([4000, 4000])
    ref_out, ref_grads = _fwd_bwd(model, wav, lengths)
    # Only the transformer layers here (one shared graph): the CNN layers would add three more graphs and
    # a minute of CPU compile time; the aot_eager test below covers every region.
    assert compile_regions(model.encoder.model.encoder) == 2
    out, grads = _fwd_bwd(model, wav, lengths)
    for a, b in zip(out, ref_out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-5, msg=k)


def test_every_region_compiles_equal_and_bucketed_lengths_do_not_recompile():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    method, model = _student()
    wav, lengths = torch.randn(2, 4800) * 0.1, torch.tensor([4800, 3300])
    ref_out, ref_grads = _fwd_bwd(model, wav, lengths)
    model = apply_compile(method, model, "student", backend="aot_eager")
    assert compile_regions(model, backend="aot_eager") == 2 + 7  # transformer layers + CNN layers; idempotent
    out, grads = _fwd_bwd(model, wav, lengths)
    for a, b in zip(out, ref_out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-5, msg=k)
    # A bucketed run sees few padded lengths: after the first two shapes (the second one makes dynamo
    # mark the length dynamic) new batches of those lengths compile nothing.
    _fwd_bwd(model, torch.randn(2, 6400) * 0.1, torch.tensor([6400, 6400]))
    graphs = counters["stats"]["unique_graphs"]
    for n in (4800, 6400, 4800):
        _fwd_bwd(model, torch.randn(2, n) * 0.1, torch.tensor([n, n - 500]))
    assert counters["stats"]["unique_graphs"] == graphs


def test_compile_mode_is_checked():
    method, model = _student()
    with pytest.raises(ValueError, match="train.compile"):
        apply_compile(method, model, "everything")


def test_compiled_teacher_under_inference_mode_gives_the_same_loss():
    """train.compile=all: the teacher's blocks compile too and run under inference_mode."""
    torch._dynamo.reset()
    method, model = _student()
    wav, lengths = torch.randn(2, 4800) * 0.1, torch.tensor([4800, 4800])
    from speechdistill.data.batch import Batch

    batch = Batch(wav, lengths, ["a", "b"], [None, None])
    model.eval()  # no dropout: the two losses must match
    ref, _ = method.compute_loss(model, batch, 0)
    model = apply_compile(method, model, "all", backend="aot_eager")
    assert getattr(method.teacher.encoder.model.encoder.layers[0], "_sd_compiled", False)
    loss, _ = method.compute_loss(model, batch, 0)
    loss.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
