"""Students where users already are: transformers' Auto classes, s3prl's upstream interface and the
transformers ASR pipeline."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from speechdistill.interop.s3prl import UpstreamExpert
from speechdistill.models.factory import tiny_encoder
from speechdistill.models.gendistiller import GenDistillerModel
from speechdistill.models.load import load_encoder
from speechdistill.prune.stat import prune_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory):
    """One saved directory per encoder kind the toolkit loads."""
    root = tmp_path_factory.mktemp("encoders")
    teacher = tiny_encoder("hubert", seed=1)
    dirs = {"hf_group": root / "hf_group", "hf_layer": root / "hf_layer", "gendistiller": root / "gen",
            "pruned": root / "pruned"}
    teacher.save_pretrained(dirs["hf_group"])
    tiny_encoder("wavlm", "layer", seed=2).save_pretrained(dirs["hf_layer"])
    torch.manual_seed(0)
    GenDistillerModel.from_teacher(teacher, target_layers=[2, 4], dropout=0.0).save_pretrained(dirs["gendistiller"])
    pruned, _ = prune_model(teacher, None, "magnitude", 0.8, calib_lengths=[16000, 12000])
    pruned.save_pretrained(dirs["pruned"])
    return dirs


def _waves():
    g = torch.Generator().manual_seed(5)
    return [torch.randn(n, generator=g) * 0.3 for n in (16000, 9000, 4100)]


def test_automodel_loads_project_students_right_after_import_speechdistill(encoder_dirs):
    """A fresh interpreter: `import speechdistill`, then only transformers' own API."""
    script = textwrap.dedent(f"""
        import json, sys, torch
        import speechdistill
        from transformers import AutoConfig, AutoModel
        from speechdistill.models.load import load_encoder
        torch.manual_seed(0)
        wav = torch.randn(2, 12000) * 0.3
        lengths = torch.tensor([12000, 7000])
        res = {{}}
        for kind in ("gendistiller", "pruned"):
            d = {json.dumps({k: str(v) for k, v in encoder_dirs.items()})}[kind]
            auto = AutoModel.from_pretrained(d).eval()
            ref = load_encoder(d).eval()
            with torch.no_grad():
                a, b = auto.encode(wav, lengths), ref.encode(wav, lengths)
            diff = max(float((x - y)[a.frame_mask].abs().max()) for x, y in zip(a.hidden_states, b.hidden_states))
            res[kind] = [type(auto).__name__, type(AutoConfig.from_pretrained(d)).__name__, diff,
                         len(a.hidden_states)]
        print(json.dumps(res))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["gendistiller"][:2] == ["GenDistillerModel", "GenDistillerConfig"]
    assert res["pruned"][:2] == ["PrunedEncoderModel", "PrunedEncoderConfig"]
    for kind, (_, _, diff, n_states) in res.items():
        assert diff == 0.0, kind
        assert n_states >= 3, kind


def test_import_speechdistill_stays_light():
    """The Auto-class hook must not pull torch or transformers into `import speechdistill`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys, speechdistill; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_load_encoder_is_importable_from_speechdistill_models():
    from speechdistill import models

    assert models.load_encoder is load_encoder


@pytest.mark.parametrize("kind", ["hf_group", "hf_layer", "gendistiller", "pruned"])
def test_s3prl_upstream_returns_encode_hidden_states(encoder_dirs, kind):
    up = UpstreamExpert(str(encoder_dirs[kind]))
    waves = _waves()
    with torch.no_grad():
        out = up(waves)
    enc = load_encoder(encoder_dirs[kind]).eval()
    assert up.get_downsample_rates("hidden_states") == 320
    states = out["hidden_states"]
    assert len(states) == enc.num_output_layers + 1
    assert out["last_hidden_state"] is states[-1]
    for i, w in enumerate(waves):
        with torch.no_grad():
            alone = enc.encode(w[None], torch.tensor([len(w)]))
        n = alone.hidden_states[0].shape[1]
        expected = list(alone.hidden_states)
        if alone.last_hidden_state is not None:
            expected[-1] = alone.last_hidden_state
        for got, want in zip(states, expected):
            # Each padded utterance gets what it gets alone (the toolkit's batching is exact) ...
            torch.testing.assert_close(got[i, :n], want[0], atol=1e-5, rtol=1e-4)
            # ... and frames past its end are zero.
            assert not got[i, n:].any()


def _tiny_ctc(head="linear", layer_select="last", family="hubert", norm="group"):
    from speechdistill.asr.ctc_model import CTCHeadConfig, CTCModel
    from speechdistill.asr.vocab import CharVocab

    vocab = CharVocab.build(["ABC DEF", "GHI"])
    torch.manual_seed(3)
    model = CTCModel(tiny_encoder(family, norm, seed=4), vocab,
                     CTCHeadConfig(head=head, layer_select=layer_select, dropout=0.0, lstm_hidden=8, lstm_layers=1))
    with torch.no_grad():  # a sharp, varied output layer so transcripts hold several words and characters
        model.output.weight.mul_(40.0)
        model.output.bias.zero_()
        # The pipeline prints a predicted <unk> as "<unk>" where the toolkit's decoder drops it; trained
        # models all but never predict it, so neither does this one.
        model.output.bias[vocab.unk_id] = -1e4
    return model.eval()


@pytest.mark.parametrize("family,norm", [("hubert", "group"), ("wavlm", "layer")])
def test_hf_ctc_export_transcribes_with_the_stock_pipeline(tmp_path, family, norm):
    from transformers import pipeline

    from speechdistill.asr.decode import greedy_decode
    from speechdistill.run.export import ExportConfig, run_export

    model = _tiny_ctc(family=family, norm=norm)
    model.save_pretrained(tmp_path / "ctc")
    result = run_export(ExportConfig(model=str(tmp_path / "ctc"), format="hf-ctc", out=str(tmp_path / "hf")))
    assert result.passed
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"][0].endswith("ForCTC") and config["pad_token_id"] == 0
    tok = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert tok.get("bos_token") is None and tok.get("eos_token") is None

    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "hf"), device="cpu")
    ours, theirs = [], []
    for w in _waves():
        with torch.no_grad():
            log_probs, frame_lengths = model(w[None], torch.tensor([len(w)]))
        ours += greedy_decode(log_probs, frame_lengths, model.vocab)
        theirs.append(asr(w.numpy())["text"])
    assert theirs == ours
    assert any(" " in t for t in ours) and len(set("".join(ours))) > 3, ours  # the check has teeth


@pytest.mark.parametrize("head,layer_select", [("bilstm", "last"), ("linear", "weighted")])
def test_hf_ctc_export_refuses_heads_transformers_cannot_run(tmp_path, head, layer_select):
    from speechdistill.models.errors import ModelLoadError
    from speechdistill.run.export import ExportConfig, run_export

    _tiny_ctc(head, layer_select).save_pretrained(tmp_path / "ctc")
    with pytest.raises(ModelLoadError, match="finetune-ctc hf_ctc"):
        run_export(ExportConfig(model=str(tmp_path / "ctc"), format="hf-ctc", out=str(tmp_path / "hf")))
    assert not (tmp_path / "hf" / "config.json").exists()
