import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechdistill.config import ConfigError, load_config
from speechdistill.methods.curriculum import CurriculumConfig, CurriculumMethod, make_projection
from speechdistill.run.distill import DistillConfig, build_method, run_distill
from speechdistill.train.engine import train

STAGES = "curriculum.stages=[{student_layer: 1, teacher_layer: 1, steps: 3}, {student_layer: 2, teacher_layer: 3, steps: 3}]"


def _cfg(corpus, out, method="distilhubert", extra=()):
    return load_config(DistillConfig, "tiny_cpu", [
        f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", f"method={method}",
        "teacher=tiny:hubert", "distilhubert.targets=[2,4]", "distilhubert.student_layers=2",
        "gendistiller.targets=[1,2,3,4]", "gendistiller.decoder_heads=4", "gendistiller.decoder_ffn_dim=32",
        "gendistiller.dropout=0.0", "train.progress=false", "data.crop_seconds=0.6", "train.log_every=1",
        "train.val_every=0", "train.save_every=0", "train.steps=10", f"out_dir={out}", *extra,
    ], command="distill")


def _log(out):
    return [json.loads(x) for x in (Path(out) / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["distilhubert", "gendistiller"])
def test_stage_runs_teacher_and_student_only_to_their_depth(tone_corpus, tmp_path, method):
    cfg = _cfg(tone_corpus, tmp_path, method, [STAGES])
    m = build_method(cfg)
    assert isinstance(m, CurriculumMethod)
    m.setup(torch.device("cpu"))
    model = m.build_model()
    layers = m.teacher.encoder.model.encoder.layers
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    from speechdistill.data.dataset import build_eval_loader

    batch = next(iter(build_eval_loader(tone_corpus["train"], 8, 2)))
    for stage, (step, deepest) in enumerate([(0, 1), (4, 3)]):
        calls[:] = [0] * len(layers)
        loss, metrics = m.compute_loss(model, batch, step)
        assert metrics["stage"] == stage and torch.isfinite(loss)
        assert calls[:deepest] == [1] * deepest and sum(calls[deepest:]) == 0, (stage, calls)
        loss.backward()
    calls[:] = [0] * len(layers)
    m.compute_loss(model, batch, 6)  # final stage: the method's own targets (deepest 4)
    assert calls == [1, 1, 1, 1]


def test_projection_stages_train_and_flops_are_counted(tone_corpus, tmp_path):
    out = tmp_path / "c"
    run_distill(_cfg(tone_corpus, out, extra=[STAGES, "train.count_flops=true", "optim.lr=3e-3", "train.steps=12"]))
    log = [r for r in _log(out) if r["split"] == "train"]
    assert [r["stage"] for r in log] == [0] * 3 + [1] * 3 + [2] * 6
    flops = [r["flops"] for r in log]
    assert all(b > a for a, b in itertools.pairwise(flops))
    # Stage 0 runs one teacher layer and one student layer: cheaper per step than the final stage.
    per_step = [b - a for a, b in zip([0.0, *flops], flops)]
    assert per_step[1] < per_step[-1]
    assert json.loads((out / "model" / "distill_info.json").read_text())["curriculum"]["stages"][1]["teacher_layer"] == 3


def test_resume_inside_a_stage_keeps_projections_and_is_exact(tone_corpus, tmp_path):
    run_distill(_cfg(tone_corpus, tmp_path / "a", extra=[STAGES, "train.save_every=2"]))
    r = run_distill(_cfg(tone_corpus, tmp_path / "b", extra=[STAGES, "train.save_every=2", "train.stop_after=4"]))
    assert r.interrupted and r.step == 4  # inside stage 1 (steps 3..5)
    run_distill(_cfg(tone_corpus, tmp_path / "b", extra=[STAGES, "train.save_every=2"]), resume=True)
    ckpt_a = load_file(max((tmp_path / "a" / "checkpoints").glob("step_*")) / "model.safetensors")
    ckpt_b = load_file(max((tmp_path / "b" / "checkpoints").glob("step_*")) / "model.safetensors")
    assert {k for k in ckpt_a if k.startswith("projection_")} == {"projection_0", "projection_1"}
    for k in ckpt_a:
        torch.testing.assert_close(ckpt_a[k], ckpt_b[k], rtol=0, atol=0, msg=k)


def test_curriculum_without_projection_stages_equals_plain_distillation(tone_corpus, tmp_path):
    cfg = _cfg(tone_corpus, tmp_path / "plain")
    run_distill(cfg)
    wrapped_cfg = _cfg(tone_corpus, tmp_path / "wrapped")
    method = CurriculumMethod(build_method(wrapped_cfg), CurriculumConfig(stages=[]), wrapped_cfg.train.steps)
    train(method, wrapped_cfg.train, wrapped_cfg.optim, wrapped_cfg.data, tmp_path / "wrapped")
    a = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    b = load_file(tmp_path / "wrapped" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_projections_and_bad_stages():
    g = torch.Generator().manual_seed(0)
    p = make_projection(16, 32, "orthogonal", g)
    torch.testing.assert_close(p @ p.T, torch.eye(16), atol=1e-5, rtol=0)
    gauss = make_projection(64, 256, "gaussian", torch.Generator().manual_seed(0))
    assert abs(float(gauss.var()) - 1 / 64) < 2e-3
    with pytest.raises(ConfigError, match="shallower"):
        load_config(DistillConfig, "tiny_cpu", [
            "curriculum.stages=[{student_layer: 1, teacher_layer: 3, steps: 2}, {student_layer: 1, teacher_layer: 2, steps: 2}]"
        ], command="distill")
