"""Artefacts (issue 12): readable by group and others as the umask allows, written whole or not at all,
and a failing command never deletes or replaces the last good one."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from conftest import run_cli, tiny_distill_args

from speechdistill.cli.main import main


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unreadable(root: Path) -> list[str]:
    """Files and folders under ``root`` missing a permission bit the umask would have granted."""
    mask = _umask()
    bad = []
    for p in [root, *root.rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~mask & 0o755
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & want != want:
            bad.append(f"{p.relative_to(root.parent)} {oct(mode)}")
    return bad


def test_every_artefact_is_readable_as_the_umask_allows(tone_corpus, tiny_model_dir, ctc_model_dir, tmp_path, capsys):
    runs = {
        "distill": tiny_distill_args(tone_corpus, tmp_path / "distill", "train.steps=2", "train.save_every=1",
                                     "method=distilhubert"),
        "finetune": ["finetune-ctc", "--upstream", str(tiny_model_dir), "--train", tone_corpus["train"], "--dev",
                     tone_corpus["dev"], "--out", str(tmp_path / "finetune"), "--steps", "2", "--head", "linear",
                     "train.progress=false"],
        "prune": ["prune", "--model", str(tiny_model_dir), "--calib", tone_corpus["dev"], "--out",
                  str(tmp_path / "prune"), "--keep-macs", "0.95", "--num-calib", "2"],
        "onnx": ["export", "--model", str(ctc_model_dir), "--with-ctc-head", "--int8", "--out", str(tmp_path / "onnx"),
                 "--parity-lengths", "0.7"],
        "safetensors": ["export", "--model", str(ctc_model_dir), "--with-ctc-head", "--format", "safetensors",
                        "--out", str(tmp_path / "safetensors"), "--parity-lengths", "0.7"],
        "evaluate": ["evaluate", "--model", str(ctc_model_dir), "--manifest", tone_corpus["dev"], "--out",
                     str(tmp_path / "evaluate")],
    }
    for name, argv in runs.items():
        assert main(argv) == 0, (name, capsys.readouterr().err[-1500:])
        assert not _unreadable(tmp_path / name), (name, _unreadable(tmp_path / name))
    assert (tmp_path / "finetune" / "model" / "encoder" / "model.safetensors").is_file()


def _stamp(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.fixture
def good_export(ctc_model_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--model", str(ctc_model_dir), "--with-ctc-head", "--int8", "--out", str(out),
                 "--parity-lengths", "0.7"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert {"model.onnx", "model.int8.onnx", "parity.json"} <= set(_stamp(out))
    return out


def _fail(report):
    report.passed = False
    report.message = "forced failure"
    return report


@pytest.mark.parametrize("stage", ["fp32", "int8"])
def test_a_failed_reexport_leaves_the_previous_good_files(good_export, ctc_model_dir, monkeypatch, stage, capsys):
    import speechdistill.export.onnx_export as oe

    before = _stamp(good_export)
    real = getattr(oe, f"{stage}_report")
    monkeypatch.setattr(oe, f"{stage}_report", lambda *a, **k: _fail(real(*a, **k)))
    rc = main(["export", "--model", str(ctc_model_dir), "--with-ctc-head", "--int8", "--out", str(good_export),
               "--parity-lengths", "0.7"])
    err = capsys.readouterr().err
    assert rc == 1 and "forced failure" in err and f"{good_export} is unchanged" in err
    after = _stamp(good_export)
    assert json.loads(after.pop("parity.failed.json"))["passed"] is False
    assert after == before  # model.onnx, model.int8.onnx and their parity.json, byte for byte
    assert not [p for p in good_export.iterdir() if p.name.startswith(".export-")]


def test_a_reexport_of_a_broken_model_leaves_the_previous_good_files(good_export, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:1000])
    before = _stamp(good_export)
    res = run_cli("export", "--model", broken, "--out", good_export)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert f"{broken / 'model.safetensors'}: cannot load the weights (truncated, or not a safetensors file" in res.stderr
    assert _stamp(good_export) == before


def test_a_failed_model_write_keeps_the_previous_model(tone_corpus, tmp_path, monkeypatch, capsys):
    """The model/ folder is swapped in whole: a failure mid-write (here: disk full) keeps the old one."""
    out = tmp_path / "run"
    args = tiny_distill_args(tone_corpus, out, "train.steps=1", "method=distilhubert")
    assert main(args) == 0
    before = _stamp(out / "model")
    from speechdistill.methods.distilhubert import DistilHuBERTMethod

    def full_disk(self, model, out_dir):
        (Path(out_dir) / "config.json").write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DistilHuBERTMethod, "save_artifact", full_disk)
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'model'}: No space left on device (free some space" in err
    assert _stamp(out / "model") == before
    assert not [p for p in out.iterdir() if p.name.startswith(".model")]


def test_prune_refuses_a_used_out_folder(tiny_model_dir, tone_corpus, tmp_path, capsys):
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["prune", "--model", str(tiny_model_dir), "--calib", tone_corpus["dev"], "--out", str(out),
            "--keep-macs", "0.95", "--num-calib", "2"]
    assert main(args) == 2
    assert "already holds files; pass --overwrite to replace the folder as a whole" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_unexpected_task_heads_are_dropped_and_new_tensors_need_an_opt_in(tiny_model_dir, tmp_path):
    """A *ForCTC checkpoint loads as its encoder (the head is dropped on purpose); a tensor the model
    needs but the file lacks is an error unless the caller names it as expected-new."""
    from safetensors.torch import load_file, save_file
    from transformers import HubertForCTC

    from speechdistill.errors import ModelLoadError
    from speechdistill.models.hf import load_hf_config
    from speechdistill.models.load import load_encoder

    ctc = HubertForCTC(load_hf_config(tiny_model_dir))
    ctc.save_pretrained(tmp_path / "for_ctc")
    assert load_encoder(tmp_path / "for_ctc").num_output_layers == 4

    lacking = tmp_path / "lacking"
    ctc.hubert.save_pretrained(lacking)
    state = load_file(lacking / "model.safetensors")
    state.pop("encoder.layer_norm.weight")
    save_file(state, str(lacking / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"missing: encoder\.layer_norm\.weight"):
        load_encoder(lacking)
    assert load_encoder(lacking, allow_missing=["encoder.layer_norm.*"]).num_output_layers == 4
