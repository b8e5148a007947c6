"""int8 that ships (issue 19): static QDQ int8 Conv calibrated on a manifest, the RTF of every exported
variant, and `evaluate` scoring the exported ONNX CTC file itself (fp32 or int8)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from speechdistill.cli.main import main
from speechdistill.export.onnx_io import read_onnx_metadata
from speechdistill.models.factory import tiny_encoder


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory, tone_corpus):
    from speechdistill.asr.ctc_model import CTCHeadConfig, CTCModel
    from speechdistill.asr.vocab import CharVocab
    from speechdistill.data.manifest import read_manifest

    torch.manual_seed(0)
    texts = [u.text for u in read_manifest(tone_corpus["train"])]
    model = CTCModel(tiny_encoder(norm="group", num_layers=2, seed=1), CharVocab.build(texts),
                     CTCHeadConfig(head="linear"))
    nn.init.normal_(model.layer_weights)
    src = tmp_path_factory.mktemp("ctc") / "model"
    model.save_pretrained(src)
    return src


def _export(src, out, tone_corpus, *extra) -> None:
    rc = main(["export", "--model", str(src), "--out", str(out), "--with-ctc-head", "--int8",
               "--parity-manifest", tone_corpus["dev"], "--parity-max-utterances", "2", "--parity-lengths", "0.7,1.3",
               "--threads", "1", "--speed-threads", "1", "--speed-seconds", "1", *extra])
    assert rc == 0


def test_static_int8_conv_export_reports_speed_and_evaluates(ctc_dir, tone_corpus, tmp_path, capsys):
    out = tmp_path / "onnx"
    _export(ctc_dir, out, tone_corpus, "--int8-conv", "static", "--int8-calib-manifest", tone_corpus["train"])
    printed = capsys.readouterr().out
    assert "onnx-int8: RTF" in printed and "torch-fp32 (source): RTF" in printed

    int8 = onnx.load(str(out / "model.int8.onnx"))
    # QDQ: every Conv reads a dequantized int8 weight; the MatMuls are dynamically quantized as before.
    producers = {o: n for n in int8.graph.node for o in n.output}
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    assert convs and all(producers[c.input[1]].op_type == "DequantizeLinear" for c in convs)
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in int8.graph.node)
    assert "quantize_static" in read_onnx_metadata(out / "model.int8.onnx")["quantization"]

    parity = json.loads((out / "parity.json").read_text())
    assert parity["reports"]["int8"]["judged_by"] == "wer" and parity["passed"]
    speed = json.loads((out / "speed.json").read_text())
    variants = [r["variant"] for r in speed["results"]]
    assert variants[:3] == ["torch-fp32 (source)", "onnx-fp32", "onnx-int8"]
    assert all(r["rtf"] > 0 and r["threads"] == 1 for r in speed["results"])

    # evaluate scores the exported file itself: fp32 ONNX decodes as the PyTorch model does.
    reports = {}
    for name, model in (("torch", ctc_dir), ("fp32", out / "model.onnx"), ("int8", out / "model.int8.onnx")):
        rc = main(["evaluate", "--model", str(model), "--manifest", tone_corpus["dev"], "--out",
                   str(tmp_path / f"eval_{name}"), "--threads", "1"])
        assert rc == 0
        reports[name] = json.loads((tmp_path / f"eval_{name}" / "report.json").read_text())
    printed = capsys.readouterr().out
    assert "WER" in printed and "CER" in printed and "RTF" in printed and "onnxruntime" in printed
    assert reports["fp32"]["backend"] == "onnxruntime" and reports["torch"]["backend"] == "torch"
    assert reports["int8"]["precision"] == "int8" and reports["int8"]["rtf"] > 0
    hyps = {k: (tmp_path / f"eval_{k}" / "hypotheses.jsonl").read_text() for k in ("torch", "fp32")}
    assert [json.loads(x)["hyp"] for x in hyps["torch"].splitlines()] == \
        [json.loads(x)["hyp"] for x in hyps["fp32"].splitlines()]
    assert reports["fp32"]["wer"] == reports["torch"]["wer"]
    assert reports["int8"]["num_utterances"] == reports["fp32"]["num_utterances"] == 6


def test_auto_int8_keeps_the_faster_variant_and_shows_both(ctc_dir, tone_corpus, tmp_path):
    out = tmp_path / "onnx"
    _export(ctc_dir, out, tone_corpus, "--int8-conv", "auto")  # calibrates on the parity manifest
    speed = json.loads((out / "speed.json").read_text())["results"]
    cand = {r["variant"]: r["rtf"] for r in speed if r["variant"].startswith("onnx-int8 (")}
    assert set(cand) == {"onnx-int8 (dynamic, Conv fp32)", "onnx-int8 (static QDQ Conv)"}
    kept_static = "quantize_static" in read_onnx_metadata(out / "model.int8.onnx")["quantization"]
    assert kept_static == (cand["onnx-int8 (static QDQ Conv)"] < cand["onnx-int8 (dynamic, Conv fp32)"])


def test_evaluate_refuses_an_encoder_export_and_static_without_audio(tmp_path, tone_corpus, capsys):
    enc = tmp_path / "enc"
    tiny_encoder(num_layers=1).save_pretrained(enc)
    assert main(["export", "--model", str(enc), "--out", str(tmp_path / "e"), "--no-speed",
                 "--parity-lengths", "0.7", "--threads", "1"]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "e" / "model.onnx"), "--manifest", tone_corpus["dev"],
                 "--out", str(tmp_path / "ev")]) != 0
    assert "not a CTC model" in capsys.readouterr().err
    assert main(["export", "--model", str(enc), "--out", str(tmp_path / "e2"), "--int8", "--int8-conv", "static"]) != 0
    assert "calibration audio" in capsys.readouterr().err
