"""Optional extras: trackers that really log, and a one-line error naming the extra when one is missing."""

import sys

import pytest

from speechdistill.cli.main import main
from speechdistill.config import ConfigError, load_config
from speechdistill.models.factory import tiny_encoder
from speechdistill.run.distill import DistillConfig, run_distill


def _distill_cfg(corpus, out, *extra):
    return load_config(DistillConfig, "tiny_cpu", [
        f"data.train_manifest={corpus['train']}", "data.dev_manifest=null", "method=distilhubert",
        "teacher=tiny:hubert", "distilhubert.targets=[2,4]", "train.progress=false", "data.crop_seconds=0.6",
        "train.steps=3", "train.log_every=1", "train.val_every=0", "train.save_every=0", f"out_dir={out}", *extra,
    ])


def test_tensorboard_event_files_are_written(tone_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_distill(_distill_cfg(tone_corpus, tmp_path / "tb", "train.log_with=tensorboard"))
    events = list((tmp_path / "tb" / "speechdistill").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in (tmp_path / "tb").rglob("*"))
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert "loss" in acc.Tags()["scalars"] and len(acc.Scalars("loss")) == 3


def test_log_with_none_writes_no_events_and_bad_names_are_config_errors(tone_corpus, tmp_path):
    run_distill(_distill_cfg(tone_corpus, tmp_path / "none", "train.log_with=none"))
    assert not list((tmp_path / "none").rglob("events.out.tfevents.*"))
    with pytest.raises(ConfigError, match="tensorbord"):
        _distill_cfg(tone_corpus, tmp_path / "x", "train.log_with=tensorbord")


def _one_line_error(capsys, argv, extra):
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if " ERROR " in ln]
    assert "Traceback" not in err and len(errors) == 1 and f"speechdistill[{extra}]" in errors[0], err


def test_missing_tensorboard_is_a_one_line_error(tone_corpus, tmp_path, monkeypatch, capsys):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", list)
    _one_line_error(capsys, ["distill", "tiny_cpu", f"data.train_manifest={tone_corpus['train']}",
                             "data.dev_manifest=null", "teacher=tiny:hubert", "train.log_with=tensorboard",
                             f"out_dir={tmp_path}"], "tensorboard")


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_missing_onnx_packages_are_a_one_line_error(tmp_path, monkeypatch, capsys, module):
    tiny_encoder("hubert", num_layers=1).save_pretrained(tmp_path / "enc")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    _one_line_error(capsys, ["export", "--model", str(tmp_path / "enc"), "--out", str(tmp_path / "x")], "export")


def test_missing_espeak_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    _one_line_error(capsys, ["data", "synth", "--out", str(tmp_path / "s"), "--hours", "0.01"], "tts")
