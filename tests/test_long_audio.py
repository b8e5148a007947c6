"""Very long recordings (issue 12: a 60-minute dev file hung validation; evaluate tried to allocate 32 GB).

Dev sets refuse (naming the file and its length) or skip utterances over ``data.max_dev_seconds``;
``evaluate`` decodes them in chunks of ``--max-seconds`` (or refuses / skips them); and a manifest
that under-states a file's length is caught when the file is read.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import run_cli, tiny_distill_args

from speechdistill.cli.main import main
from speechdistill.data.manifest import Utterance, read_manifest, write_manifest


@pytest.fixture(scope="module")
def long_dev(tmp_path_factory, tone_corpus):
    """The dev manifest plus one 70-second recording."""
    root = tmp_path_factory.mktemp("long")
    wav = root / "long70.wav"
    sf.write(str(wav), 0.05 * np.random.default_rng(0).standard_normal(70 * 16000).astype(np.float32), 16000)
    manifest = root / "dev_long.jsonl"
    write_manifest(manifest, [*read_manifest(tone_corpus["dev"]), Utterance("long70", str(wav), 70 * 16000, 16000, "AB")])
    return manifest


def test_a_long_dev_file_is_refused_before_training_or_skipped(tone_corpus, long_dev, tmp_path, capsys):
    args = tiny_distill_args(tone_corpus, tmp_path / "a", "train.steps=2", "method=distilhubert",
                             f"data.dev_manifest={long_dev}", "data.max_dev_batches=0")
    res = run_cli(*args, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "long70.wav: 70.0 s long, above the 60 s limit (data.max_dev_seconds" in res.stderr
    assert not (tmp_path / "a" / "train_log.jsonl").exists()  # refused before the first step
    assert main([*args[:-1], f"out_dir={tmp_path / 'b'}", "data.on_long_dev=skip"]) == 0
    assert "left out 1 utterance(s) longer than 60 s" in capsys.readouterr().err


def _evaluate(ctc_model_dir, manifest, out, *extra):
    return main(["evaluate", "--model", str(ctc_model_dir), "--manifest", str(manifest), "--out", str(out), *extra])


def test_evaluate_decodes_long_files_in_bounded_chunks(ctc_model_dir, long_dev, tmp_path, monkeypatch, capsys):
    from speechdistill.asr.ctc_model import CTCModel

    longest = []
    real = CTCModel.forward

    def spy(self, wav, lengths=None):
        longest.append(wav.shape[-1])
        return real(self, wav, lengths)

    monkeypatch.setattr(CTCModel, "forward", spy)
    assert _evaluate(ctc_model_dir, long_dev, tmp_path / "e", "--max-seconds", "20", "--max-batch-seconds", "40") == 0
    assert max(longest) <= 20 * 16000  # no forward ever saw the whole 70 s
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["long_audio"]["chunked"] == ["long70"] and report["num_utterances"] == 7
    assert "decoded in 20 s chunks" in capsys.readouterr().err

    assert _evaluate(ctc_model_dir, long_dev, tmp_path / "f", "--max-seconds", "20", "--on-long-audio", "error") == 2
    assert "long70.wav: 70.0 s long, above the 20 s limit (max_seconds" in capsys.readouterr().err
    assert _evaluate(ctc_model_dir, long_dev, tmp_path / "g", "--max-seconds", "20", "--on-long-audio", "skip") == 0
    report = json.loads((tmp_path / "g" / "report.json").read_text())
    assert report["num_utterances"] == 6 and report["skipped_files"][0]["path"].endswith("long70.wav")


def test_chunked_decoding_joins_the_chunks_in_order(ctc_model_dir, tone_corpus):
    from speechdistill.asr.ctc_model import CTCModel
    from speechdistill.asr.decode import greedy_decode
    from speechdistill.asr.evaluate import _decode_long
    from speechdistill.data.batch import Batch

    model = CTCModel.from_pretrained(ctc_model_dir)
    wav = torch.randn(1, 5 * 16000) * 0.1
    batch = Batch(wav, torch.tensor([wav.shape[1]]), ["x"], [None])
    def greedy(log_probs, frame_lengths):
        return greedy_decode(log_probs, frame_lengths, model.vocab)

    with torch.inference_mode():
        assert _decode_long(model, batch, 10 * 16000, 10 * 16000, greedy) == greedy_decode(*model(wav), model.vocab)
        pieces = [model(wav[:, a : a + 16000])[0][0] for a in range(0, 5 * 16000, 16000)]
        joined = torch.cat(pieces)[None]
        expected = greedy_decode(joined, torch.tensor([joined.shape[1]]), model.vocab)
        assert _decode_long(model, batch, 16000, 3 * 16000, greedy) == expected


def test_a_manifest_that_understates_a_length_is_caught_when_read(tone_corpus, tmp_path, capsys):
    wav = tmp_path / "ten.wav"
    sf.write(str(wav), 0.05 * np.ones(10 * 16000, np.float32), 16000)
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, [Utterance(f"u{i}", str(wav), 2 * 16000, 16000, "AB") for i in range(4)])
    args = tiny_distill_args(tone_corpus, tmp_path / "run", "train.steps=2", "method=distilhubert", "data.crop_seconds=0",
                             f"data.train_manifest={manifest}")
    assert main(args) == 2
    assert "ten.wav: the file holds 10.00 s of audio but the manifest says 2.00 s" in capsys.readouterr().err
