import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechdistill.config import load_config
from speechdistill.run.distill import DistillConfig, run_distill
from speechdistill.train.optim import OptimConfig, lr_factor

REPO = Path(__file__).resolve().parents[1]


def _cfg(corpus, out, method="distilhubert", extra=()):
    return load_config(DistillConfig, "tiny_cpu", [
        f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", f"method={method}",
        "teacher=tiny:hubert", "distilhubert.targets=[2,4]", "gendistiller.targets=[1,2,3,4]",
        "gendistiller.decoder_heads=4", "gendistiller.decoder_ffn_dim=64", "train.progress=false",
        "data.crop_seconds=0.6", "train.log_every=1", "train.val_every=0", "train.save_every=0",
        f"out_dir={out}", *extra,
    ])


def _log(out, split="train"):
    return [json.loads(ln) for ln in (Path(out) / "train_log.jsonl").read_text().splitlines()
            if json.loads(ln)["split"] == split]


@pytest.mark.parametrize("method", ["distilhubert", "gendistiller"])
def test_per_layer_losses_fall(tone_corpus, tmp_path, method):
    out = tmp_path / method
    lr = "5e-3" if method == "distilhubert" else "2e-3"
    run_distill(_cfg(tone_corpus, out, method, ["train.steps=40", f"optim.lr={lr}", "gendistiller.dropout=0.0"]))
    log = _log(out)
    keys = [k for k in log[0] if k.startswith("l1_L")]
    assert len(keys) == (2 if method == "distilhubert" else 4)
    for k in keys:
        first = sum(r[k] for r in log[:5]) / 5
        last = sum(r[k] for r in log[-5:]) / 5
        assert last < 0.8 * first, (k, first, last)
    assert (out / "model" / "config.json").is_file() and (out / "train_summary.json").is_file()


def test_interrupted_and_resumed_equals_uninterrupted(tone_corpus, tmp_path):
    extra = ["train.steps=14", "gendistiller.dropout=0.1", "train.save_every=5"]
    run_distill(_cfg(tone_corpus, tmp_path / "a", "gendistiller", extra))
    r = run_distill(_cfg(tone_corpus, tmp_path / "b", "gendistiller", [*extra, "train.stop_after=8"]))
    assert r.interrupted and r.step == 8
    assert not (tmp_path / "b" / "model").exists()
    r = run_distill(_cfg(tone_corpus, tmp_path / "b", "gendistiller", extra), resume=True)
    assert r.step == 14 and not r.interrupted
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_sigint_saves_a_checkpoint(tone_corpus, tmp_path):
    """A real SIGINT mid-run: the process saves, exits 130, and --resume finishes."""
    out = tmp_path / "sig"
    args = [sys.executable, "-m", "speechdistill", "distill", "tiny_cpu", "method=distilhubert", "teacher=tiny:hubert",
            f"data.train_manifest={tone_corpus['train']}", "distilhubert.targets=[2,4]", "train.steps=100000",
            "train.progress=false", "data.crop_seconds=0.6", f"out_dir={out}", "data.dev_manifest=null"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "train_log.jsonl"
    import time

    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(2)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-2000:]
    state = json.loads(next((out / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    assert state["step"] >= 2


def test_two_process_cpu_run_under_accelerate(tone_corpus, tmp_path):
    """The 2-CPU-process command documented in the tiny_cpu recipe (and the README), as written."""
    import shlex

    from speechdistill.config import recipe_text

    line = next(ln for ln in recipe_text("tiny_cpu", "distill")[1].splitlines() if "accelerate launch" in ln)
    documented = shlex.split(line.lstrip("# "))
    assert documented[0] == "accelerate" and documented[-2:] == ["distill", "tiny_cpu"], documented
    out = tmp_path / "ddp"
    cmd = [*documented, "method=distilhubert", "teacher=tiny:hubert",
           f"data.train_manifest={tone_corpus['train']}", f"data.dev_manifest={tone_corpus['dev']}",
           "distilhubert.targets=[2,4]", "train.steps=4", "train.progress=false", "data.crop_seconds=0.6",
           f"out_dir={out}", "data.max_batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["step"] == 4
    ckpt = next((out / "checkpoints").glob("step_*"))
    assert (ckpt / "rng_rank0.json").is_file() and (ckpt / "rng_rank1.json").is_file()


def test_distilhubert_student_loads_with_stock_hubert(tone_corpus, tmp_path):
    from transformers import AutoModel, HubertModel

    out = tmp_path / "dh"
    run_distill(_cfg(tone_corpus, out, "distilhubert", ["train.steps=2", "distilhubert.student_layers=2"]))
    model = AutoModel.from_pretrained(out / "model")
    assert isinstance(model, HubertModel) and model.config.num_hidden_layers == 2
    from speechdistill.methods.distilhubert import load_student

    student = load_student(out / "model")
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        ref = model(wav).last_hidden_state
        ours = student.encoder.encode(wav).hidden_states[-1]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    assert len(student.prediction_heads.out) == 2


def test_lr_schedule_warmup_and_decay():
    cfg = OptimConfig(warmup_ratio=0.1, schedule="linear")
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[50] < f[10] and f[-1] < 0.05
    cos = OptimConfig(warmup_ratio=0.0, schedule="cosine")
    assert lr_factor(50, 100, cos) == pytest.approx(0.5, abs=0.02)


def test_pruned_teacher_distills_as_student(tone_corpus, tmp_path):
    """STAT-pruned model as the starting student (prune, then recover by distillation)."""
    from speechdistill.models.factory import tiny_encoder
    from speechdistill.models.load import load_encoder
    from speechdistill.prune import prune_model

    enc = tiny_encoder("hubert", "group", num_layers=4, hidden_size=32, intermediate_size=64)
    torch.manual_seed(0)
    batches = [(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])) for _ in range(2)]
    # Tiny models are CNN-heavy: 0.85 of the MACs is what halving the transformer buys here.
    pruned, _ = prune_model(enc, batches, "stat", 0.85)
    pruned.save_pretrained(tmp_path / "pruned")
    enc.save_pretrained(tmp_path / "teacher")
    out = tmp_path / "recover"
    run_distill(_cfg(tone_corpus, out, "distilhubert", [
        "train.steps=3", f"teacher={tmp_path / 'teacher'}", f"distilhubert.student_init={tmp_path / 'pruned'}",
    ]))
    student = load_encoder(out / "model")
    assert type(student).__name__ == "PrunedEncoderModel"
    assert student.config.num_heads == pruned.config.num_heads
    assert student.encode(torch.randn(1, 4000)).hidden_states[-1].isfinite().all()


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_audio_in_training_names_the_file_or_is_skipped(tone_corpus, tmp_path, workers):
    import soundfile as sf

    from speechdistill.data.errors import BadAudioError
    from speechdistill.data.manifest import Utterance, read_manifest, write_manifest

    bad = tmp_path / "tiny.wav"
    sf.write(str(bad), torch.zeros(120).numpy(), 16000)
    utts = read_manifest(tone_corpus["train"]) + [Utterance("bad", str(bad), 120, 16000, "AB")]
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, utts)
    extra = ["train.steps=12", f"data.num_workers={workers}", f"data.train_manifest={manifest}"]
    with pytest.raises(BadAudioError, match="tiny.wav: too short"):
        run_distill(_cfg(tone_corpus, tmp_path / "err", "distilhubert", extra))
    run_distill(_cfg(tone_corpus, tmp_path / "skip", "distilhubert", [*extra, "data.on_bad_audio=skip"]))
    summary = json.loads((tmp_path / "skip" / "train_summary.json").read_text())
    assert summary["skipped_utterances"] >= 1
