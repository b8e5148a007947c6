"""Expected failures end in one clear line and a non-zero exit, never a traceback (issue 12, "Tracebacks").

The message names the file, key or value; the traceback appears only with ``--log-level DEBUG``.
Representative cases run in a real process (``conftest.run_cli``); the many variants of one class
run through the same entry point in-process (``cli.main.main``), which is what the process runs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import run_cli, tiny_distill_args
from safetensors.torch import load_file, save_file

from speechdistill.cli.main import main

ERROR_LINE = re.compile(r"^\d\d:\d\d:\d\d ERROR ")


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.split("\n") if " ERROR " in ln]


def _edit_weights(d: Path, edit) -> None:
    state = load_file(d / "model.safetensors")
    edit(state)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


def _edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


class _Payload:  # a pickle that would create a file if anything unpickled it unsafely
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


K = "encoder.layers.0.attention.k_proj.weight"
# name -> (how to break a copy of a good model directory, what the message must name)
BAD_MODELS = {
    "config_missing": (lambda d: (d / "config.json").unlink(), r"config\.json does not exist"),
    "config_empty_object": (lambda d: (d / "config.json").write_text("{}"), r"config\.json has no model_type"),
    "config_list": (lambda d: (d / "config.json").write_text("[1, 2]"), r"config\.json must hold a JSON object"),
    "config_not_utf8": (lambda d: (d / "config.json").write_bytes(b'{"model_type": "\xe9"}'), r"config\.json is not UTF-8"),
    "empty_dir": (lambda d: [p.unlink() for p in d.iterdir()], r"config\.json does not exist"),
    "layers_negative": (lambda d: _edit_config(d, num_hidden_layers=-3), r"num_hidden_layers=-3"),
    "truncated": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
                  r"model\.safetensors: cannot load"),
    "zero_bytes": (lambda d: (d / "model.safetensors").write_bytes(b""), r"model\.safetensors: cannot load"),
    "random_bytes": (lambda d: (d / "model.safetensors").write_bytes(os.urandom(3000)), r"model\.safetensors"),
    "missing_tensor": (lambda d: _edit_weights(d, lambda s: s.pop(K)), rf"missing: {re.escape(K)}"),
    "unexpected_tensor": (lambda d: _edit_weights(d, lambda s: s.__setitem__("encoder.extra", torch.zeros(2))),
                          r"no place in the model: encoder\.extra"),
    "wrong_shape": (lambda d: _edit_weights(d, lambda s: s.__setitem__(K, torch.zeros(5, 5))),
                    rf"{re.escape(K)} is \(5, 5\) in the file but \(32, 32\)"),
    "all_nan": (lambda d: _edit_weights(d, lambda s: [t.fill_(float("nan")) for t in s.values()]), r"NaN or Inf"),
}


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("bad_models")
    out = {}
    for name, (edit, _) in BAD_MODELS.items():
        d = root / name
        shutil.copytree(tiny_model_dir, d)
        edit(d)
        out[name] = d
    d = root / "pickle"
    shutil.copytree(tiny_model_dir, d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload(root / "PAYLOAD_RAN")}))
    out["pickle"] = d
    return out


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_a_broken_model_directory_is_named_by_every_loader(bad_models, name, tmp_path, capsys, tone_corpus):
    d = bad_models[name]
    expected = BAD_MODELS[name][1]
    assert main(["export", "--model", str(d), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err) and str(d) in err and "Traceback" not in err, err[-1500:]
    assert not (tmp_path / "x" / "model.onnx").exists()
    # The same directory as a distillation teacher (the training path loads through the same loader).
    assert main(tiny_distill_args(tone_corpus, tmp_path / "run", f"teacher={d}", "train.steps=1")) == 2
    assert re.search(expected, capsys.readouterr().err)


def test_a_malicious_pickle_is_refused_without_running(bad_models, tmp_path, capsys):
    assert main(["export", "--model", str(bad_models["pickle"]), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin: holds Python objects besides tensors; refusing to unpickle" in err
    assert "weights_only` set to `False`" not in err  # no advice to turn the safety off
    assert not (bad_models["pickle"].parent / "PAYLOAD_RAN").exists()


def test_a_broken_ctc_model_is_named(ctc_model_dir, bad_models, tmp_path, tone_corpus, capsys):
    head = tmp_path / "bad_head"
    shutil.copytree(ctc_model_dir, head)
    _edit_weights_file = head / "ctc_head.safetensors"
    state = load_file(_edit_weights_file)
    state["output.weight"] = torch.zeros(3, 3)
    save_file(state, str(_edit_weights_file))
    assert main(["evaluate", "--model", str(head), "--manifest", tone_corpus["dev"], "--out", str(tmp_path / "e")]) == 2
    assert re.search(r"ctc_head\.safetensors .*output\.weight is \(3, 3\) in the file", capsys.readouterr().err)
    cfg = tmp_path / "bad_cfg"
    shutil.copytree(ctc_model_dir, cfg)
    (cfg / "ctc_config.json").write_text("[]")
    assert main(["export", "--model", str(cfg), "--with-ctc-head", "--out", str(tmp_path / "x")]) == 2
    assert "ctc_config.json must hold a JSON object, not list" in capsys.readouterr().err
    enc = tmp_path / "bad_encoder"
    shutil.copytree(ctc_model_dir, enc)
    shutil.rmtree(enc / "encoder")
    shutil.copytree(bad_models["missing_tensor"], enc / "encoder")
    assert main(["evaluate", "--model", str(enc), "--manifest", tone_corpus["dev"], "--out", str(tmp_path / "e")]) == 2
    assert re.search(rf"bad_encoder/encoder/model\.safetensors: .*missing: {re.escape(K)}", capsys.readouterr().err)


def test_one_line_in_a_real_process_and_a_traceback_only_under_debug(bad_models, tmp_path, capsys):
    args = ["export", "--model", str(bad_models["missing_tensor"]), "--out", str(tmp_path / "x")]
    res = run_cli(*args)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]) and K in lines[0], res.stderr[-2000:]
    assert main(["--log-level", "DEBUG", *args]) == 2
    assert "Traceback" in capsys.readouterr().err


def _bad_manifest(tone_corpus, tmp_path) -> str:
    """The training manifest with one corrupt file in it (found mid-run, while the bar is drawn)."""
    from speechdistill.data.manifest import Utterance, read_manifest, write_manifest

    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(2000))
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, [*read_manifest(tone_corpus["train"]), Utterance("corrupt", str(bad), 16000, 16000, "AB")])
    return str(manifest)


def test_an_error_mid_progress_bar_starts_on_its_own_line(tone_corpus, tmp_path):
    manifest = _bad_manifest(tone_corpus, tmp_path)
    res = run_cli(*tiny_distill_args(tone_corpus, tmp_path / "run", f"data.train_manifest={manifest}",
                                     "train.progress=true", "train.steps=30", "method=distilhubert"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = _error_lines(res.stderr)
    assert lines and all(ERROR_LINE.match(ln) for ln in lines), lines
    assert "corrupt.wav: unreadable or corrupt audio" in lines[-1]


def test_a_full_disk_is_named_and_leaves_no_temp_files(tone_corpus, tmp_path):
    out = tmp_path / "run"
    res = run_cli(*tiny_distill_args(tone_corpus, out, "train.steps=2", "method=distilhubert"), fsize_limit=20_000)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    (line,) = _error_lines(res.stderr)
    assert "File too large" in line and str(out) in line and "free some space" in line
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_non_utf8_manifest_and_recipe_are_named(tone_corpus, tmp_path, capsys):
    manifest = tmp_path / "latin1.jsonl"
    first = json.loads(Path(tone_corpus["dev"]).read_text().splitlines()[0])
    first["path"] = str(Path(tone_corpus["dev"]).parent / first["path"])
    manifest.write_bytes(json.dumps(first).encode() + b"\n" + '{"id": "\xe9t\xe9"}\n'.encode("latin-1"))
    assert main(["data", "check", str(manifest)]) == 1
    assert f"{manifest}:2: not UTF-8 text" in capsys.readouterr().out
    assert main(tiny_distill_args(tone_corpus, tmp_path / "r", f"data.train_manifest={manifest}")) == 2
    assert f"{manifest}:2: not UTF-8 text" in capsys.readouterr().err
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes("# r\xe9cipe\nmethod: distilhubert\n".encode("latin-1"))
    assert main(["distill", str(recipe), "--print-config"]) == 2
    assert f"recipe file {recipe} is not UTF-8" in capsys.readouterr().err


def test_data_check_refuses_an_empty_manifest_and_a_wrong_length(tone_corpus, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["data", "check", str(empty)]) == 1
    assert "the manifest holds no utterances" in capsys.readouterr().err
    entry = json.loads(Path(tone_corpus["dev"]).read_text().splitlines()[0])
    entry["path"] = str(Path(tone_corpus["dev"]).parent / entry["path"])
    entry["num_samples"] = 30 * 16000  # the file is about a second long
    lie = tmp_path / "lie.jsonl"
    lie.write_text(json.dumps(entry) + "\n")
    for extra in ([], ["--no-decode"]):
        assert main(["data", "check", str(lie), *extra]) == 1
        assert re.search(r"holds \d+\.\d+ s of audio but the manifest says 30\.00 s", capsys.readouterr().out)


@pytest.mark.parametrize("args, expected", [
    (["evaluate", "--device", "cuda"], r"device 'cuda': this torch build .* has no CUDA support|no GPU is visible"),
    (["evaluate", "--device", "tpu"], r"device='tpu': choose cpu, cuda, cuda:N or auto"),
    (["evaluate", "--threads", "-1"], r"threads=-1: must be >= 0"),
    (["export", "--parity-lengths", "0.01"], r"parity\.lengths_s .* must be at least 0\.025 s"),
    (["export", "--int8", "--int8-ops", "Foo"], r"--int8-ops Foo: unknown op type\(s\) Foo"),
    (["export", "--int8-ops", "Foo"], r"--int8-ops Foo: unknown op type\(s\) Foo"),
])
def test_environment_and_option_errors(args, expected, ctc_model_dir, tone_corpus, tmp_path, capsys):
    common = {"evaluate": ["--model", str(ctc_model_dir), "--manifest", tone_corpus["dev"]],
              "export": ["--model", str(ctc_model_dir)]}[args[0]]
    assert main([*args, *common, "--out", str(tmp_path / "o")]) == 2
    assert re.search(expected, capsys.readouterr().err)


def test_evaluate_threads_0_means_torch_default(ctc_model_dir, tone_corpus, tmp_path, capsys):
    assert main(["evaluate", "--model", str(ctc_model_dir), "--manifest", tone_corpus["dev"], "--out",
                 str(tmp_path / "e"), "--threads", "0"]) == 0


def test_an_output_path_that_is_a_file_is_named(ctc_model_dir, tiny_model_dir, tone_corpus, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    commands = [
        tiny_distill_args(tone_corpus, f, "train.steps=1"),
        tiny_distill_args(tone_corpus, f / "sub", "train.steps=1"),
        ["export", "--model", str(tiny_model_dir), "--out", str(f)],
        ["evaluate", "--model", str(ctc_model_dir), "--manifest", tone_corpus["dev"], "--out", str(f)],
        ["prune", "--model", str(tiny_model_dir), "--calib", tone_corpus["dev"], "--out", str(f)],
        ["data", "check", tone_corpus["dev"], "--json", str(f / "report.json")],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert str(f) in err and "Traceback" not in err, (argv, err[-800:])
    assert f.read_text() == "x"


def test_an_all_nan_teacher_is_blamed_not_the_learning_rate(tone_corpus, tmp_path, bad_models, capsys):
    assert main(tiny_distill_args(tone_corpus, tmp_path / "r", f"teacher={bad_models['all_nan']}")) == 2
    err = capsys.readouterr().err
    assert "NaN or Inf" in err and "optim.lr" not in err


def test_internal_errors_are_one_line_too(monkeypatch, tmp_path, capsys, tone_corpus):
    """A bug (an exception no one expected) still ends in one line, saying it is a bug."""
    from speechdistill.data import check

    monkeypatch.setattr(check, "check_manifest", lambda *a, **k: 1 / 0)
    assert main(["data", "check", tone_corpus["dev"]]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert "internal error (a bug in speechdistill" in line and "ZeroDivisionError" in line


def test_audio_with_nan_samples_is_named(tone_corpus, tmp_path, capsys):
    wav = tmp_path / "nan.wav"
    sf.write(str(wav), np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "n", "path": str(wav), "num_samples": 8000, "sample_rate": 16000}) + "\n")
    assert main(["data", "check", str(manifest)]) == 1
    assert "nan.wav: 8000 NaN/Inf sample(s)" in capsys.readouterr().out
