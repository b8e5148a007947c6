"""The eSpeak NG corpus synthesiser: determinism, splits, manifests, audio, text modes, CLI."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from speechdistill.cli import synth_cmd as synth_cli
from speechdistill.data.audio import load_audio
from speechdistill.data.errors import BadInputError
from speechdistill.data.manifest import read_manifest
from speechdistill.data.synth.corpus import SPLITS, synthesize_corpus
from speechdistill.data.synth.espeak import EspeakSynth, EspeakUnavailableError, find_espeak
from speechdistill.data.synth.text import (
    DIGIT_WORDS,
    DigitGenerator,
    SentenceGenerator,
    is_valid_transcript,
    load_lexicon,
)

HOURS = 0.005  # 18 s of audio, about 7 utterances


def corpus_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def all_utts(summary: dict) -> dict:
    return {s: read_manifest(summary["manifests"][s]) for s in SPLITS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    return out, synthesize_corpus(out, HOURS, seed=0, num_workers=1)


def test_same_seed_is_byte_identical_whatever_the_worker_count(corpus, tmp_path):
    out_a, _ = corpus
    summary_b = synthesize_corpus(tmp_path / "b", HOURS, seed=0, num_workers=2)
    files_a, files_b = corpus_files(out_a), corpus_files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert all(files_a[k] == files_b[k] for k in files_a)
    # Utterances synthesised past the cut-off by the pool must not be left behind.
    n_wavs = sum(1 for k in files_b if k.endswith(".wav"))
    assert n_wavs == summary_b["total_utterances"] == sum(len(u) for u in all_utts(summary_b).values())


def test_different_seeds_differ(corpus, tmp_path):
    _, a = corpus
    b = synthesize_corpus(tmp_path / "c", HOURS, seed=1, num_workers=1)
    texts_a = [u.text for s in SPLITS for u in all_utts(a)[s]]
    texts_b = [u.text for s in SPLITS for u in all_utts(b)[s]]
    assert texts_a != texts_b
    assert Path(a["speakers_file"]).read_bytes() != Path(b["speakers_file"]).read_bytes()


def test_splits_are_speaker_disjoint_and_non_empty(corpus):
    out, summary = corpus
    utts = all_utts(summary)
    speakers = {s: {u.speaker for u in utts[s]} for s in SPLITS}
    assert all(speakers[s] for s in SPLITS)
    assert not speakers["train"] & speakers["test"]
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["dev"] & speakers["test"]
    doc = json.loads((out / "speakers.json").read_text())
    by_id = {spk["id"]: spk for spk in doc["speakers"]}
    for s in SPLITS:
        assert all(by_id[spk]["split"] == s for spk in speakers[s])
        assert summary["num_speakers"][s] == len(speakers[s])
    assert sum(spk["num_utterances"] for spk in doc["speakers"]) == summary["total_utterances"]


def test_manifests_and_audio_are_valid(corpus):
    out, summary = corpus
    utts = [u for us in all_utts(summary).values() for u in us]
    assert len({u.id for u in utts}) == len(utts)
    for u in utts:
        assert u.sample_rate == 16000
        info = sf.info(u.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        wav = load_audio(u.path, expected_sr=16000)
        assert wav.shape[0] == u.num_samples
        assert 0.05 < np.abs(wav).max() < 1.0  # speech, not silence, not clipped
        assert is_valid_transcript(u.text), u.text
        assert 4 <= len(u.text.split()) <= 14
        assert Path(u.path).is_relative_to(out.resolve() / "wav")
    # Relative paths in the file so the corpus folder can move.
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert first["path"].startswith("wav/")


def test_duration_target_is_the_shortest_prefix(corpus):
    _, summary = corpus
    utts = sorted((u for us in all_utts(summary).values() for u in us), key=lambda u: u.id.rsplit("-", 1)[1])
    total = sum(u.duration for u in utts)
    assert total >= HOURS * 3600
    assert total - utts[-1].duration < HOURS * 3600
    assert summary["total_hours"] == pytest.approx(total / 3600, abs=1e-4)


def test_digits_mode_says_only_digits(tmp_path):
    summary = synthesize_corpus(tmp_path / "d", 0.003, seed=5, text="digits", num_workers=1)
    utts = [u for us in all_utts(summary).values() for u in us]
    assert utts
    for u in utts:
        words = u.text.split()
        assert 1 <= len(words) <= 7
        assert set(words) <= set(DIGIT_WORDS), u.text


def test_fixed_size_test_split(tmp_path):
    """--test-utterances/--test-speakers: exactly N test utterances from M unseen speakers; hours = train + dev."""
    hours = 0.002
    summary = synthesize_corpus(tmp_path / "f", hours, seed=3, text="digits", num_workers=1,
                                test_utterances=12, test_speakers=4)
    utts = all_utts(summary)
    assert len(utts["test"]) == 12
    test_speakers = {u.speaker for u in utts["test"]}
    assert len(test_speakers) == 4
    assert not test_speakers & {u.speaker for s in ("train", "dev") for u in utts[s]}
    timed = sum(u.duration for s in ("train", "dev") for u in utts[s])
    last = max((u for s in ("train", "dev") for u in utts[s]), key=lambda u: u.id.rsplit("-", 1)[1])
    assert timed >= hours * 3600 > timed - last.duration
    # The same request from two workers gives the same files.
    again = synthesize_corpus(tmp_path / "g", hours, seed=3, text="digits", num_workers=2,
                              test_utterances=12, test_speakers=4)
    assert corpus_files(tmp_path / "f") == corpus_files(tmp_path / "g")
    assert again["num_utterances"] == summary["num_utterances"]


def test_refuses_to_overwrite_unless_asked(corpus, tmp_path):
    out = tmp_path / "e"
    synthesize_corpus(out, 0.001, seed=2, num_workers=1)
    with pytest.raises(BadInputError, match="already holds a corpus"):
        synthesize_corpus(out, 0.001, seed=2, num_workers=1)
    summary = synthesize_corpus(out, 0.001, seed=3, num_workers=1, overwrite=True)
    n_wavs = len(list((out / "wav").rglob("*.wav")))
    assert n_wavs == summary["total_utterances"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hours": 0},
        {"hours": -1},
        {"text": "poems"},
        {"num_speakers": 2},
        {"test_fraction": 0.0},
        {"num_workers": 0},
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs):
    args = {"hours": 0.001, **kwargs}
    with pytest.raises(BadInputError):
        synthesize_corpus(tmp_path / "f", **args)
    assert not (tmp_path / "f").exists()


def test_missing_espeakng_loader_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes the import fail
    with pytest.raises(EspeakUnavailableError, match=r"speechdistill\[tts\]"):
        find_espeak()


def test_engine_output_depends_only_on_the_request():
    with EspeakSynth() as engine:
        a = engine.synthesize("the red boat sailed away", "en-us", "m3", rate=170, pitch=45, seed=7)
        engine.synthesize("something else first?", "en-gb-x-rp", "f2", rate=220, pitch=80, seed=3)
        b = engine.synthesize("the red boat sailed away", "en-us", "m3", rate=170, pitch=45, seed=7)
        c = engine.synthesize("the red boat sailed away", "en-us", "f3", rate=170, pitch=45, seed=7)
    assert a.dtype == np.int16 and a.shape[0] > engine.sample_rate // 2
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sentence_grammar():
    gen = SentenceGenerator()
    rng = random.Random(0)
    prompts = [gen.generate(rng) for _ in range(500)]
    lengths = [len(p.transcript.split()) for p in prompts]
    assert min(lengths) >= 4 and max(lengths) <= 14
    assert len(set(lengths)) >= 8  # varied lengths
    assert len({p.transcript for p in prompts}) == len(prompts)
    assert all(is_valid_transcript(p.transcript) for p in prompts)
    assert any("'" in p.transcript for p in prompts)
    assert any(p.spoken.endswith("?") for p in prompts) and any(p.spoken.endswith(".") for p in prompts)
    # The synthesiser reads lower case (espeak spells some all-capital words).
    for p in prompts:
        assert p.spoken.rstrip(".?").replace(",", "") == p.transcript.lower()
    again = SentenceGenerator().generate(random.Random(0))
    assert again == prompts[0]


def test_digit_generator():
    rng = random.Random(1)
    prompts = [DigitGenerator().generate(rng) for _ in range(300)]
    assert {len(p.transcript.split()) for p in prompts} == set(range(1, 8))
    assert {"ZERO", "OH"} <= {w for p in prompts for w in p.transcript.split()}


def test_lexicon_errors_name_the_line(tmp_path):
    bad = tmp_path / "words.txt"
    bad.write_text("[noun]\nDOG DOGS\nCat CATS\n")
    with pytest.raises(BadInputError, match=r"words.txt:3"):
        load_lexicon(bad)
    assert len(load_lexicon().nouns) > 100


def test_cli_registers_and_runs(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    synth_cli.register(sub)
    for action in sub.choices["synth"]._actions:
        assert action.help, f"option {action.option_strings} has no help"
    args = parser.parse_args(
        [
            "synth",
            "--out",
            str(tmp_path / "g"),
            "--hours",
            "0.001",
            "--num-workers",
            "1",
            "--text",
            "digits",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["text"] == "digits" and summary["total_utterances"] >= 3
    assert (tmp_path / "g" / "speakers.json").is_file()
