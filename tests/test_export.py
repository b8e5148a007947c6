"""Edge export: ONNX fp32/int8 and safetensors, parity on unseen lengths and padded batches, metadata,
refusal of failing exports, clear errors for broken files, and the CTC head.

Every ONNX check here also compares onnxruntime with PyTorch directly (per utterance, unpadded), so the
tests do not rely on the parity code they are testing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from speechdistill.cli.main import main
from speechdistill.export.onnx_export import FP32_NAME, INT8_NAME, OnnxExportOptions, export_onnx
from speechdistill.export.onnx_graph import parse_outputs
from speechdistill.export.onnx_io import load_onnx_session, read_onnx_metadata
from speechdistill.export.parity import ParityError, ParityOptions
from speechdistill.export.safetensors_export import export_safetensors
from speechdistill.models.encoder import masked_group_norm
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.factory import tiny_encoder

FAST = ParityOptions(lengths_s=(0.7, 1.3), threads=1)  # both differ from the 1 s trace length
META_KEYS = (
    "sample_rate",
    "frame_rate",
    "output_layers",
    "source",
    "teacher",
    "recipe",
    "speechdistill_version",
    "opset",
    "precision",
)


def _student_dir(tmp_path, norm: str, **kw) -> str:
    d = tmp_path / f"student_{norm}"
    tiny_encoder(norm=norm, num_layers=2, seed=3, **kw).save_pretrained(d)
    return str(d)


def _padded(lengths, seed=7):
    g = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wav, torch.tensor(lengths)


def _ort(path, wav, lengths):
    sess = load_onnx_session(path, threads=1)
    out, fl = sess.run(None, {"waveform": wav.numpy(), "lengths": lengths.numpy()})
    return torch.from_numpy(out), torch.from_numpy(fl)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------------- unit pieces
def test_masked_group_norm_equals_group_norm_on_each_utterance():
    gn = nn.GroupNorm(4, 8)
    nn.init.normal_(gn.weight)
    nn.init.normal_(gn.bias)
    x = torch.randn(3, 8, 20)
    lengths = torch.tensor([20, 13, 5])
    y = masked_group_norm(x, gn, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(y[b, :, :n], gn(x[b : b + 1, :, :n])[0], atol=1e-5)
    # Plain GroupNorm over the padded row is NOT the same: the masking matters.
    assert not torch.allclose(gn(x[1:2])[0, :, :13], gn(x[1:2, :, :13])[0], atol=1e-3)


def test_parse_outputs():
    assert parse_outputs("last", 3) is None
    assert parse_outputs("all", 3) == [0, 1, 2]
    assert parse_outputs("0,-1", 3) == [0, 2]
    from speechdistill.config import ConfigError

    with pytest.raises(ConfigError, match="out of range"):
        parse_outputs("5", 3)
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_outputs("x", 3)


# ------------------------------------------------------------------------------ DistilHuBERT students
def test_layer_norm_student_all_layers_unseen_lengths_and_metadata(tmp_path):
    src = _student_dir(tmp_path, "layer")
    out = tmp_path / "onnx"
    res = export_onnx(src, out, OnnxExportOptions(outputs="all", parity=FAST))
    assert res.passed and (out / FP32_NAME).is_file() and not (out / INT8_NAME).exists()
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["reports"]["fp32"]["max_rel_err"] < 1e-4
    assert {c["name"] for c in report["reports"]["fp32"]["cases"]} >= {"random-0.7s", "random-padded-batch"}

    meta = read_onnx_metadata(out / FP32_NAME)
    assert all(k in meta for k in META_KEYS)
    assert meta["sample_rate"] == "16000" and meta["frame_rate"] == "50" and meta["precision"] == "fp32"
    assert meta["output_layers"] == "0,1,2" and meta["opset"] == "17"
    assert meta["input_normalization"].startswith("per-utterance")

    # Independent check: batch of 3 at lengths never seen, each row vs PyTorch on the unpadded utterance.
    from speechdistill.models.load import load_encoder

    enc = load_encoder(src).eval()
    lengths = [6400, 36800, 20000]
    wav, lens = _padded(lengths)
    hs, fl = _ort(out / FP32_NAME, wav, lens)
    assert hs.shape[:2] == (3, 3) and fl.tolist() == [19, 114, 62]
    with torch.no_grad():
        for b, n in enumerate(lengths):
            ref = torch.stack(enc.encode(wav[b : b + 1, :n]).hidden_states, 1)[0]
            assert _rel_err(hs[b, :, : fl[b]], ref) < 1e-4


def test_group_norm_student_padded_batch_is_exact(tmp_path):
    src = _student_dir(tmp_path, "group")
    out = tmp_path / "onnx"
    export_onnx(src, out, OnnxExportOptions(parity=FAST))
    from speechdistill.models.load import load_encoder

    enc = load_encoder(src).eval()
    lengths = [8000, 52000]
    wav, lens = _padded(lengths, seed=11)
    hs, fl = _ort(out / FP32_NAME, wav, lens)
    with torch.no_grad():
        short_alone = enc.encode(wav[:1, :8000]).last_hidden_state[0]
        naive = enc.model(wav).last_hidden_state[0, : short_alone.shape[0]]  # CNN normalised over padding
    assert _rel_err(hs[0, : fl[0]], short_alone) < 1e-4
    assert _rel_err(naive, short_alone) > 1e-3  # what an unmasked batched export would get wrong


def test_parity_failure_refuses_to_write(tmp_path, monkeypatch):
    import speechdistill.export.onnx_export as oe

    src = _student_dir(tmp_path, "layer")
    out = tmp_path / "onnx"
    out.mkdir()
    (out / FP32_NAME).write_bytes(b"previous")  # the last good export: a failed one must leave it in place
    real = oe.reference_runner

    def shifted(source, layers):  # a reference the export cannot match: every value off by 0.5
        run = real(source, layers)

        def off(wav, lengths):
            out, frame_lengths = run(wav, lengths)
            return out + 0.5, frame_lengths

        return off

    monkeypatch.setattr(oe, "reference_runner", shifted)
    with pytest.raises(ParityError, match=r"refusing to write .*exceeds the bound .* by 0\.[45]"):
        export_onnx(src, out, OnnxExportOptions(parity=FAST))
    assert (out / FP32_NAME).read_bytes() == b"previous"
    assert not [p for p in out.iterdir() if p.name.startswith(".export-")]
    assert not (out / "parity.json").exists()
    report = json.loads((out / "parity.failed.json").read_text())
    assert report["passed"] is False and report["reports"]["fp32"]["max_abs_err"] == pytest.approx(
        0.5, abs=1e-3
    )


def test_int8_is_smaller_and_reported_not_judged(tmp_path):
    # Wide enough that the quantized matrices dominate the file.
    src = _student_dir(tmp_path, "group", hidden_size=256, intermediate_size=1024, num_heads=4)
    out = tmp_path / "onnx"
    res = export_onnx(
        src, out, OnnxExportOptions(int8=True, parity=ParityOptions(lengths_s=(0.7,), threads=1))
    )
    fp32, int8 = out / FP32_NAME, out / INT8_NAME
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    assert read_onnx_metadata(int8)["precision"] == "int8"
    r8 = res.parity["int8"]
    assert r8.judged_by == "report-only" and r8.passed and r8.min_cosine > 0.99
    assert 0 < r8.max_rel_err < 0.2  # quantization error exists but is modest


# --------------------------------------------------------------------------------------- GenDistiller
def test_gendistiller_export_unseen_lengths(tmp_path):
    from speechdistill.models.gendistiller import GenDistillerModel

    torch.manual_seed(0)
    # dropout > 0 on purpose: the export must leave the model in eval mode (deterministic) afterwards.
    gd = GenDistillerModel.from_teacher(
        tiny_encoder(num_layers=4),
        target_layers=[2, 4],
        decoder_hidden_size=32,
        decoder_heads=4,
        decoder_ffn_dim=64,
        mask="axial",
        dropout=0.1,
    )
    src = tmp_path / "gd"
    gd.save_pretrained(src)
    out = tmp_path / "onnx"
    res = export_onnx(src, out, OnnxExportOptions(outputs="all", int8=True, parity=FAST))
    assert res.passed and res.parity["fp32"].max_rel_err < 1e-4
    assert read_onnx_metadata(out / FP32_NAME)["model_type"] == "gendistiller"
    # The shared decoder block runs once per step: every step's matmuls must be quantized, with no
    # fp32 copy of a weight left behind (the exporter feeds later steps through Identity nodes).
    import onnx

    g8 = onnx.load(str(out / INT8_NAME)).graph
    floats = {i.name for i in g8.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}
    assert not [n for n in g8.node if n.op_type in ("MatMul", "Identity") and floats & set(n.input)]
    assert sum(n.op_type == "MatMulInteger" for n in g8.node) >= 2 * 4  # K=2 steps x (qkv, out, ffn x2)

    gd.eval()
    lengths = [11200, 27000]
    wav, lens = _padded(lengths, seed=5)
    hs, fl = _ort(out / FP32_NAME, wav, lens)
    assert hs.shape[1] == 3  # x0 and the K=2 generated layers
    with torch.no_grad():
        for b, n in enumerate(lengths):
            ref = torch.stack(gd.encode(wav[b : b + 1, :n]).hidden_states, 1)[0]
            assert _rel_err(hs[b, :, : fl[b]], ref) < 1e-4


def test_pruned_wavlm_export_unseen_lengths(tmp_path):
    """Any project encoder built on hf_encode exports the same way (WavLM's shared position bias too)."""
    from speechdistill.models.factory import tiny_config
    from speechdistill.models.pruned import PrunedEncoderModel, pruned_config_from

    cfg = pruned_config_from(
        tiny_config("wavlm", "layer", num_layers=2),
        "wavlm",
        [[0, 2], [1, 2, 3]],
        [40, 24],
        normalize_input=True,
    )
    torch.manual_seed(0)
    pruned = PrunedEncoderModel(cfg).eval()
    src = tmp_path / "pruned"
    pruned.save_pretrained(src)
    out = tmp_path / "onnx"
    assert export_onnx(src, out, OnnxExportOptions(parity=FAST)).passed
    lengths = [7000, 30000]
    wav, lens = _padded(lengths, seed=4)
    hs, fl = _ort(out / FP32_NAME, wav, lens)
    with torch.no_grad():
        for b, n in enumerate(lengths):
            ref = pruned.encode(wav[b : b + 1, :n]).last_hidden_state[0]
            assert _rel_err(hs[b, : fl[b]], ref) < 1e-4


# ----------------------------------------------------------------------------------------- safetensors
def test_safetensors_student_loads_with_stock_hubert(tmp_path):
    from transformers import HubertModel

    src = _student_dir(tmp_path, "group")
    out = tmp_path / "hf"
    res = export_safetensors(src, out)
    assert res.passed and res.parity["safetensors"].max_abs_err == 0.0
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    assert not list(out.glob("*.bin"))
    stock = HubertModel.from_pretrained(out).eval()
    orig = HubertModel.from_pretrained(src).eval()
    assert stock.config.num_hidden_layers == 2 and stock.config.layerdrop == 0.0
    wav = _padded([12000])[0]
    with torch.no_grad():
        assert torch.equal(stock(wav).last_hidden_state, orig(wav).last_hidden_state)
    info = json.loads((out / "export_info.json").read_text())
    assert info["loads_with"] == "transformers.HubertModel.from_pretrained" and info["sample_rate"] == "16000"


# ------------------------------------------------------------------------------------------- errors
def test_truncated_onnx_and_missing_model_give_clear_errors(tmp_path, capsys):
    src = _student_dir(tmp_path, "layer")
    out = tmp_path / "onnx"
    export_onnx(src, out, OnnxExportOptions(parity=ParityOptions(lengths_s=(0.7,), threads=1)))
    broken = tmp_path / "broken.onnx"
    data = (out / FP32_NAME).read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match=r"broken\.onnx.*re-export"):
        load_onnx_session(broken)
    with pytest.raises(ModelLoadError, match=r"broken\.onnx"):
        read_onnx_metadata(broken)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_onnx_session(tmp_path / "nope.onnx")

    missing = tmp_path / "no_such_model"
    assert main(["export", "--model", str(missing), "--out", str(tmp_path / "x")]) == 2
    assert f"model directory {missing} does not exist" in capsys.readouterr().err
    assert (
        main(["export", "--model", src, "--out", str(tmp_path / "x"), "--format", "safetensors", "--int8"])
        == 2
    )
    assert "--int8 applies to --format onnx only" in capsys.readouterr().err
    assert main(["export", "--model", src, "--out", str(tmp_path / "x"), "--with-ctc-head"]) == 2
    assert "needs a CTC model directory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- CTC
def test_ctc_head_export_with_int8_wer_check(tmp_path, tone_corpus, capsys):
    from speechdistill.asr.ctc_model import CTCHeadConfig, CTCModel
    from speechdistill.asr.vocab import CharVocab
    from speechdistill.data.manifest import read_manifest

    torch.manual_seed(0)
    texts = [u.text for u in read_manifest(tone_corpus["train"])]
    model = CTCModel(
        tiny_encoder(norm="group", num_layers=2, seed=1),
        CharVocab.build(texts),
        CTCHeadConfig(head="bilstm", lstm_hidden=16, lstm_layers=1),
    )
    nn.init.normal_(model.layer_weights)
    src = tmp_path / "ctc"
    model.save_pretrained(src)
    out = tmp_path / "onnx"
    rc = main(
        [
            "export",
            "--model",
            str(src),
            "--out",
            str(out),
            "--with-ctc-head",
            "--int8",
            "--parity-manifest",
            tone_corpus["dev"],
            "--parity-max-utterances",
            "3",
            "--parity-lengths",
            "0.7,1.3",
            "--threads",
            "1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert {"model.onnx", "model.int8.onnx", "vocab.json", "parity.json"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "parity.json").read_text())
    assert report["reports"]["fp32"]["passed"] and report["reports"]["fp32"]["max_rel_err"] < 1e-4
    r8 = report["reports"]["int8"]
    assert r8["judged_by"] == "wer" and set(r8["wer"]) >= {"fp32", "int8", "increase"}
    assert r8["wer"]["utterances"] == 6  # every dev utterance, not just the 3 used for tensor parity
    assert {c["source"] for c in report["reports"]["fp32"]["cases"]} == {"random", "manifest"}
    assert read_onnx_metadata(out / FP32_NAME)["outputs"] == "log_probs,frame_lengths"

    lengths = [9000, 20000]
    wav, lens = _padded(lengths, seed=2)
    log_probs, fl = _ort(out / FP32_NAME, wav, lens)
    assert log_probs.shape[-1] == len(model.vocab)
    with torch.no_grad():
        for b, n in enumerate(lengths):
            ref, _ = model.eval()(wav[b : b + 1, :n])
            assert _rel_err(log_probs[b, : fl[b]], ref[0]) < 1e-4
    assert np.allclose(log_probs[0, : fl[0]].exp().sum(-1).numpy(), 1.0, atol=1e-4)


def test_shipped_assets_and_onnx_metadata_hold_no_absolute_paths(tmp_path):
    """Artefacts travel: no absolute local path in the shipped teacher's JSON or an export's `source`."""
    from importlib import resources

    assets = resources.files("speechdistill") / "assets"
    def strings(v):
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            return [s for x in v for s in strings(x)]
        return [v] if isinstance(v, str) else []

    for path in Path(str(assets)).rglob("*.json"):
        absolute = [s for s in strings(json.loads(path.read_text())) if Path(s).is_absolute()]
        assert not absolute, f"{path}: {absolute}"
    src = _student_dir(tmp_path, "group")
    export_onnx(src, tmp_path / "onnx", OnnxExportOptions(parity=FAST))
    meta = read_onnx_metadata(tmp_path / "onnx" / "model.onnx")
    assert meta["source"] == Path(src).name and str(tmp_path) not in json.dumps(meta)
