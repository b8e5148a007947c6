"""ASR downstream: vocabulary, CTC decoding, metrics, CTC model save/load, fine-tuning and evaluation."""

from __future__ import annotations

import json
import math

import jiwer
import pytest
import torch
from conftest import make_tone_corpus

from speechdistill.asr.ctc_model import (
    CTCHeadConfig,
    CTCModel,
    build_ctc_model,
    parse_upstream_config,
    spec_augment,
)
from speechdistill.asr.decode import collapse_ctc, greedy_decode, greedy_ids
from speechdistill.asr.metrics import error_rates, normalize_text
from speechdistill.asr.vocab import BLANK, UNK, WORD_DELIMITER, CharVocab, VocabError
from speechdistill.data.batch import Batch
from speechdistill.models.factory import tiny_encoder

# ---------------------------------------------------------------------------------------------
# vocabulary


def test_vocab_round_trip_with_apostrophes_and_delimiter(tmp_path):
    texts = ["Don't stop", "it's O'Neil's  book", "rock'n'roll"]
    vocab = CharVocab.build(texts)
    assert vocab.tokens[:3] == [BLANK, UNK, WORD_DELIMITER]
    assert vocab.blank_id == 0
    assert "'" in vocab.tokens and " " not in vocab.tokens
    for t in texts:
        ids = vocab.encode(t)
        assert vocab.blank_id not in ids
        assert ids.count(vocab.delimiter_id) == normalize_text(t).count(" ")
        assert vocab.decode(ids) == normalize_text(t)
    # "|" and "<...>" in transcripts are punctuation: they never alias the special tokens.
    assert vocab.encode("d|o <t>") == vocab.encode("do t")
    assert vocab.encode("Z") == [vocab.unk_id] and vocab.decode([vocab.unk_id]) == ""

    vocab.save(tmp_path)
    hf = json.loads((tmp_path / "vocab.json").read_text())
    assert hf[BLANK] == 0 and hf[WORD_DELIMITER] == vocab.delimiter_id and len(hf) == len(vocab)
    loaded = CharVocab.load(tmp_path)
    assert loaded.tokens == vocab.tokens
    assert loaded.decode(loaded.encode(texts[1])) == "IT'S O'NEIL'S BOOK"


def test_vocab_rejects_collisions():
    with pytest.raises(VocabError):
        CharVocab(["A", BLANK, UNK, WORD_DELIMITER])  # blank not at 0
    with pytest.raises(VocabError):
        CharVocab([BLANK, UNK, WORD_DELIMITER, "A", "A"])
    with pytest.raises(VocabError):
        CharVocab([BLANK, UNK, WORD_DELIMITER, " "])
    with pytest.raises(VocabError):
        CharVocab.build(["", None, "!!"])


# ---------------------------------------------------------------------------------------------
# decoding


def _one_hot_log_probs(seqs: list[list[int]], vocab_size: int) -> torch.Tensor:
    T = max(len(s) for s in seqs)
    lp = torch.full((len(seqs), T, vocab_size), -10.0)
    for b, s in enumerate(seqs):
        for t, i in enumerate(s):
            lp[b, t, i] = 0.0
        for t in range(len(s), T):
            lp[b, t, 3] = 0.0  # padding frames predict a real character: must be ignored
    return lp.log_softmax(-1)


def test_greedy_ctc_collapse_rules():
    assert collapse_ctc([3, 3, 0, 3]) == [3, 3]  # a blank separates a real repeat
    assert collapse_ctc([3, 3, 3]) == [3]  # repeats without a blank merge
    assert collapse_ctc([0, 3, 0, 0, 4, 4, 0]) == [3, 4]
    assert collapse_ctc([]) == []

    vocab = CharVocab([BLANK, UNK, WORD_DELIMITER, "A", "B"])
    seqs = [[3, 3, 0, 3], [3, 3, 3], [0, 3, 2, 2, 4, 4, 0], [0, 0]]
    lp = _one_hot_log_probs(seqs, len(vocab))
    lengths = torch.tensor([len(s) for s in seqs])
    assert greedy_decode(lp, lengths, vocab) == ["AA", "A", "A B", ""]
    # Without lengths the padding frames (predicting "A") leak into the output.
    assert greedy_ids(lp, None)[3] == [3]
    assert greedy_ids(lp, lengths)[3] == []


# ---------------------------------------------------------------------------------------------
# metrics


def test_wer_cer_match_jiwer_and_per_utterance_counts_add_up():
    refs = ["THE CAT SAT ON THE MAT", "HELLO WORLD", "IT'S A TEST", "ONE"]
    hyps = ["THE CAT SAT ON MAT", "HELO WORLD WIDE", "ITS A TEST", ""]
    r = error_rates(refs, hyps, normalize=False)
    assert r.wer == pytest.approx(jiwer.wer(refs, hyps))
    assert r.cer == pytest.approx(jiwer.cer(refs, hyps))
    # Corpus level, not the mean of per-utterance rates.
    per_utt_mean = sum(e.word_errors / e.ref_words for e in r.per_utterance) / len(refs)
    assert not math.isclose(r.wer, per_utt_mean)
    assert sum(e.word_errors for e in r.per_utterance) == r.word_errors == 1 + 2 + 1 + 1
    assert sum(e.ref_words for e in r.per_utterance) == r.ref_words == 12
    assert sum(e.char_errors for e in r.per_utterance) == r.char_errors


def test_normalisation():
    assert normalize_text("  Don't, stop-me   NOW! ") == "DON'T STOP ME NOW"
    assert normalize_text("\u2018Tis the \u201cend\u201d \u2014 isn\u2019t it?") == "'TIS THE END ISN'T IT"
    assert normalize_text("' quoted '") == "QUOTED"
    assert normalize_text(None) == ""
    r = error_rates(["Hello, world."], ["hello world"])
    assert r.wer == 0.0 and r.cer == 0.0


# ---------------------------------------------------------------------------------------------
# model


def _vocab() -> CharVocab:
    return CharVocab.build(["ABCDEF"])


def test_ctc_model_save_load_identical_log_probs(tmp_path):
    head = CTCHeadConfig(head="bilstm", lstm_hidden=8, lstm_layers=2, proj_dim=12, specaugment=True)
    model = CTCModel(tiny_encoder(), _vocab(), head, encoder_source="tiny")
    with torch.no_grad():
        model.layer_weights.copy_(torch.randn(model.num_states))
    model.eval()
    wav = torch.randn(2, 6000)
    lengths = torch.tensor([6000, 3500])
    lp, fl = model(wav, lengths)
    assert lp.dtype == torch.float32 and lp.shape[:2] == (2, int(fl.max()))
    assert torch.allclose(lp.exp().sum(-1), torch.ones(lp.shape[:2]), atol=1e-5)

    model.save_pretrained(tmp_path / "ctc")
    names = {p.name for p in (tmp_path / "ctc").iterdir()}
    assert {"encoder", "ctc_head.safetensors", "ctc_config.json", "vocab.json"} <= names
    loaded = CTCModel.from_pretrained(tmp_path / "ctc")
    lp2, fl2 = loaded(wav, lengths)
    assert torch.equal(fl, fl2)
    assert torch.allclose(lp, lp2, atol=1e-6)
    assert loaded.head_config == head
    meta = json.loads((tmp_path / "ctc" / "ctc_config.json").read_text())
    assert meta["layer_weights"] == pytest.approx(model.layer_weight_list())


def test_frozen_encoder_gets_no_grad_and_stays_in_eval():
    model = CTCModel(tiny_encoder(), _vocab(), CTCHeadConfig(head="linear"))
    model.train()
    assert not model.encoder.training and model.output.training
    lp, _ = model(torch.randn(1, 4000), torch.tensor([4000]))
    lp.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.layer_weights.grad is not None and model.layer_weights.grad.abs().sum() > 0


def test_specaugment_guards_very_short_inputs():
    torch.manual_seed(0)
    cfg = CTCHeadConfig(specaugment=True, time_mask_width=10, num_time_masks=3, num_feat_masks=0)
    feats = torch.ones(3, 50, 16)
    out = spec_augment(feats, torch.tensor([1, 2, 50]), cfg)
    assert torch.equal(out[:2], feats[:2])  # too short for any time mask
    frames = out[2].sum(-1)
    assert ((frames == 0) | (frames == 16)).all() and (frames == 0).any()
    assert (frames == 0).sum() <= 3 * 10
    # A 400-sample clip (one frame) trains without crashing.
    model = CTCModel(tiny_encoder(), _vocab(), CTCHeadConfig(head="bilstm", lstm_hidden=4, specaugment=True))
    model.train()
    lp, fl = model(torch.randn(2, 4000), torch.tensor([400, 4000]))
    assert fl.tolist()[0] == 1 and torch.isfinite(lp).all()


def test_random_upstream_config_and_implied_unfreeze():
    spec = parse_upstream_config("preset=tiny,num_hidden_layers=2,conv_dim=[8,8,8,8,8,8,8]")
    assert spec == {"preset": "tiny", "num_hidden_layers": 2, "conv_dim": [8] * 7}
    model = build_ctc_model("random:wavlm", _vocab(), CTCHeadConfig(head="linear"), spec)
    assert not model.encoder_frozen and model.num_states == 3
    assert all(p.requires_grad for p in model.encoder.parameters())
    from speechdistill.config import ConfigError

    with pytest.raises(ConfigError, match="no_such_key"):
        build_ctc_model("random:hubert", _vocab(), None, {"preset": "tiny", "no_such_key": 1})


def test_ctc_method_loss_skips_empty_transcripts_and_groups_lrs():
    from speechdistill.methods.ctc import CTCConfig, CTCMethod

    vocab = _vocab()
    cfg = CTCConfig(upstream="random:hubert", upstream_config={"preset": "tiny"},
                    head=CTCHeadConfig(head="linear"), encoder_lr_scale=0.1)
    method = CTCMethod(cfg, vocab)
    model = method.build_model()
    wav, lengths = torch.randn(2, 4000), torch.tensor([4000, 3000])
    loss, stats = method.compute_loss(model, Batch(wav, lengths, ["a", "b"], ["AB", ""]), 0)
    assert torch.isfinite(loss) and loss > 0 and stats["empty_transcripts"] == 1
    loss0, _ = method.compute_loss(model, Batch(wav, lengths, ["a", "b"], [None, ""]), 0)
    assert loss0.item() == 0.0 and loss0.requires_grad
    groups = method.param_groups(model, lr=1e-3, weight_decay=0.01)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == pytest.approx(1e-3) and lrs["encoder"] == pytest.approx(1e-4)
    n_params = sum(p.numel() for g in groups for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# end to end: CLI finetune-ctc (engine) overfits 4 tone utterances, then CLI evaluate


def test_finetune_cli_overfits_and_evaluate_reports(tmp_path, capsys):
    from speechdistill.cli.main import main

    texts = ["AB CAB", "BAD FACE", "DEAF", "CAFE BED"]
    manifest = make_tone_corpus(tmp_path / "data", texts, "train")
    out = tmp_path / "run"
    rc = main([
        "finetune-ctc", "--upstream", "random:hubert", "--upstream-config", "preset=tiny",
        "--head", "linear", "--train", manifest, "--dev", manifest, "--out", str(out),
        "--steps", "100", "--lr", "3e-3", "--warmup-ratio", "0.05", "--max-batch-size", "4",
        "--mixed-precision", "no", "--log-every", "50",
        "ctc.head.dropout=0", "optim.schedule=constant", "train.progress=false",
    ])
    assert rc == 0
    model_dir = out / "model"
    assert (model_dir / "ctc_config.json").is_file() and (out / "train_log.jsonl").is_file()

    # An evaluation manifest with one corrupt file, skipped and counted.
    bad = tmp_path / "data" / "broken.wav"
    bad.write_bytes(b"not a wav file")
    lines = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    lines.append(json.dumps({"id": "broken", "path": "broken.wav", "num_samples": 16000,
                             "sample_rate": 16000, "text": "AB"}))
    eval_manifest = tmp_path / "data" / "eval.jsonl"
    eval_manifest.write_text("\n".join(lines) + "\n")

    capsys.readouterr()
    rc = main(["evaluate", "--model", str(model_dir), "--manifest", str(eval_manifest),
               "--out", str(tmp_path / "eval"), "--threads", "1", "--on-bad-audio", "skip"])
    assert rc == 0
    shown = capsys.readouterr()
    assert "evaluate:" in shown.err and "MACs" in shown.out  # a progress bar, and MACs in the summary
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert 0 < report["encoder_macs_per_second"] <= report["total_macs_per_second"]
    for key in ("wer", "cer", "num_utterances", "audio_hours", "params", "rtf", "threads", "skipped"):
        assert key in report
    assert report["cer"] < 0.1, report
    # Word boundaries survive decoding (a dropped "|" glues words and wrecks WER).
    assert report["wer"] < 0.3, report
    assert report["num_utterances"] == 4 and report["skipped"] == 1 and report["threads"] == 1
    assert report["params"]["encoder"] < report["params"]["total"] and report["rtf"] > 0
    hyps = [json.loads(x) for x in (tmp_path / "eval" / "hypotheses.jsonl").read_text().splitlines()]
    assert [h["id"] for h in hyps] == [f"train_{i:03d}" for i in range(4)]
    assert {"ref", "hyp", "word_errors", "char_errors"} <= set(hyps[0])
    assert sum(" " in h["hyp"] for h in hyps) >= 2
    assert sum(h["char_errors"] for h in hyps) == report["char_errors"]

    # Missing transcripts are refused with a clear error, not scored as empty references.
    no_text = tmp_path / "data" / "no_text.jsonl"
    first = json.loads(lines[0])
    first.pop("text")
    no_text.write_text(json.dumps(first) + "\n")
    assert main(["evaluate", "--model", str(model_dir), "--manifest", str(no_text), "--out", str(tmp_path / "e2")]) == 2


def test_finetune_config_defaults_and_crop_refused():
    from speechdistill.config import ConfigError, from_dict
    from speechdistill.run.finetune import FinetuneConfig

    def finetune_config_from_dict(d):
        return from_dict(FinetuneConfig, d)

    base = {"ctc": {"upstream": "random:hubert"}, "data": {"train_manifest": "train.jsonl"}}
    cfg = finetune_config_from_dict({**base, "optim": {"schedule": "cosine"}})
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.schedule == "cosine"
    with pytest.raises(ConfigError, match="crop"):
        finetune_config_from_dict({**base, "data": {"train_manifest": "t.jsonl", "crop_seconds": 2.0}})
    with pytest.raises(ConfigError, match="upstream"):
        finetune_config_from_dict({"data": {"train_manifest": "t.jsonl"}})
