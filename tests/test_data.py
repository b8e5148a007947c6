import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechdistill.cli.main import main as cli
from speechdistill.data.audio import load_audio, resample
from speechdistill.data.check import check_manifest
from speechdistill.data.dataset import (
    AudioDataset,
    BucketBatchSampler,
    build_eval_loader,
    load_utterances,
    make_batches,
)
from speechdistill.data.errors import BadAudioError, ManifestError
from speechdistill.data.manifest import Utterance, read_manifest, write_manifest
from speechdistill.data.scan import export_fairseq, import_fairseq, scan_folder, scan_librispeech


def _wav(path, n=8000, sr=16000, channels=1, value=None):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, channels)).astype(np.float32) * 0.1 if value is None else np.full((n, channels), value, np.float32)
    sf.write(str(path), data, sr, subtype="FLOAT" if value is not None else "PCM_16")
    return str(path)


def test_manifest_paths_relative_to_cwd_are_rebased(tmp_path, monkeypatch):
    (tmp_path / "audio").mkdir()
    _wav(tmp_path / "audio" / "a.wav")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    write_manifest(tmp_path / "out" / "m.jsonl", [Utterance("a", "audio/a.wav", 8000, 16000)])
    assert json.loads((tmp_path / "out" / "m.jsonl").read_text())["path"] == "../audio/a.wav"
    assert read_manifest(tmp_path / "out" / "m.jsonl")[0].path == str(tmp_path / "out" / ".." / "audio" / "a.wav")
    assert len(load_audio(read_manifest(tmp_path / "out" / "m.jsonl")[0].path)) == 8000


def test_manifest_round_trip_relative_paths(tmp_path):
    (tmp_path / "audio").mkdir()
    p = _wav(tmp_path / "audio" / "a.wav")
    utts = [Utterance("a", p, 8000, 16000, "HELLO WORLD", "spk1"), Utterance("b", p, 8000, 16000)]
    m = tmp_path / "m.jsonl"
    write_manifest(m, utts)
    first = json.loads(m.read_text().splitlines()[0])
    assert first["path"] == "audio/a.wav"  # relative to the manifest's folder
    assert "text" not in json.loads(m.read_text().splitlines()[1])
    back = read_manifest(m)
    assert [u.id for u in back] == ["a", "b"] and back[0].text == "HELLO WORLD" and back[0].path == p
    # the corpus folder can move
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)
    assert read_manifest(moved / "m.jsonl")[0].path == str(moved / "audio" / "a.wav")


@pytest.mark.parametrize(
    "line,problem",
    [
        ("{not json", "invalid JSON"),
        ('{"id": "x", "path": "a.wav", "num_samples": 10}', "missing key(s) sample_rate"),
        ('{"id": "x", "path": "a.wav", "num_samples": -1, "sample_rate": 16000}', "non-negative"),
        ('{"id": "x", "path": "a.wav", "num_samples": 1, "sample_rate": 16000, "lang": "en"}', "unknown key"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_bad_manifest_lines_name_the_line(tmp_path, line, problem):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "ok", "path": "a.wav", "num_samples": 1, "sample_rate": 16000}\n' + line + "\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert f"{m}:2" in str(e.value) and problem in str(e.value)
    assert len(read_manifest(m, on_bad_line="skip")) == 1


def test_bad_audio_cases(tmp_path):
    missing = str(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    empty = _wav(tmp_path / "empty.wav", n=0)
    short = _wav(tmp_path / "short.wav", n=300)
    nan = _wav(tmp_path / "nan.wav", n=4000, value=float("nan"))
    stereo = _wav(tmp_path / "stereo.wav", n=4000, channels=2)
    rate = _wav(tmp_path / "rate.wav", n=8000, sr=8000)
    cases = {
        missing: "does not exist",
        str(corrupt): "unreadable or corrupt",
        empty: "empty audio",
        short: "too short",
        nan: "NaN/Inf",
    }
    for path, problem in cases.items():
        with pytest.raises(BadAudioError) as e:
            load_audio(path)
        assert path in str(e.value) and problem in str(e.value), str(e.value)
    with pytest.raises(BadAudioError, match="channels"):
        load_audio(stereo, mono="error")
    assert load_audio(stereo).ndim == 1  # default: mix to mono
    with pytest.raises(BadAudioError, match="manifest says 16000"):
        load_audio(rate, expected_sr=16000)
    assert len(load_audio(rate, expected_sr=8000)) == 16000  # resampled on load


def test_check_names_each_bad_file_and_skip_counts(tmp_path, capsys):
    good = _wav(tmp_path / "good.wav")
    short = _wav(tmp_path / "short.wav", n=200)
    nan = _wav(tmp_path / "nan.wav", n=4000, value=float("nan"))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"not audio at all")
    utts = [
        Utterance("good", good, 8000, 16000),
        Utterance("short", short, 200, 16000),
        Utterance("nan", nan, 4000, 16000),
        Utterance("corrupt", str(corrupt), 100, 16000),
        Utterance("gone", str(tmp_path / "gone.wav"), 100, 16000),
    ]
    m = tmp_path / "m.jsonl"
    write_manifest(m, utts)
    with open(m, "a") as f:
        f.write("{broken\n")
    rep = check_manifest(str(m), progress=False)
    problems = dict(rep.bad)
    assert rep.utterances == 1
    assert "too short" in problems[short] and "NaN" in problems[nan]
    assert "corrupt" in problems[str(corrupt)] and "does not exist" in problems[str(tmp_path / "gone.wav")]
    assert any("invalid JSON" in p for w, p in rep.bad if w.endswith(":6"))
    assert cli(["data", "check", str(m)]) == 1
    out = capsys.readouterr().out
    assert out.count("BAD ") == 5
    assert cli(["data", "check", str(m), "--on-bad-audio", "skip", "--clean-out", str(tmp_path / "c.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "skipped 5 bad utterance(s)" in out
    assert [u.id for u in read_manifest(tmp_path / "c.jsonl")] == ["good"]


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_loader_skip_reports(tmp_path, workers):
    good = _wav(tmp_path / "good.wav")
    short = _wav(tmp_path / "short.wav", n=100)
    m = tmp_path / "m.jsonl"
    write_manifest(m, [Utterance("g", good, 8000, 16000), Utterance("s", short, 100, 16000)])
    with pytest.raises(BadAudioError, match="too short"):
        list(build_eval_loader(str(m), num_workers=workers))
    # Skips made in worker processes still reach the caller's count.
    loader = build_eval_loader(str(m), on_bad_audio="skip", num_workers=workers)
    batches = list(loader)
    assert sum(len(b) for b in batches) == 1
    assert loader.skipped == [(short, loader.skipped[0][1])] and "too short" in loader.skipped[0][1]


def test_resample_keeps_sine_frequency():
    sr_in, f0 = 44100, 440.0
    t = np.arange(sr_in) / sr_in
    y = resample(np.sin(2 * np.pi * f0 * t).astype(np.float32), sr_in, 16000)
    assert abs(len(y) - 16000) <= 1
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spec) * 16000 / len(y)
    assert abs(peak_hz - f0) < 2.0


def test_batches_respect_budget():
    rng = np.random.default_rng(0)
    sizes = rng.integers(8000, 160000, size=200).tolist()
    budget = 16000 * 20
    batches = make_batches(sizes, budget, 16, shuffle=True, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) <= 16 and max(sizes[i] for i in b) * len(b) <= budget
    assert batches == make_batches(sizes, budget, 16, shuffle=True, seed=3)
    assert batches != make_batches(sizes, budget, 16, shuffle=True, seed=4)


def test_sampler_shards_ranks_and_resumes(tone_corpus):
    utts, _ = load_utterances(tone_corpus["train"])
    ds = AudioDataset(utts)
    full = BucketBatchSampler(ds, 4.0, 4, seed=1)
    r0 = BucketBatchSampler(ds, 4.0, 4, seed=1, rank=0, world_size=2)
    r1 = BucketBatchSampler(ds, 4.0, 4, seed=1, rank=1, world_size=2)
    a, b = list(r0), list(r1)
    assert len(a) == len(b)
    assert not {i for x in a for i in x} & {i for x in b for i in x}
    all_batches = list(full)
    full.set_epoch(0, start_batch=2)
    assert list(full) == all_batches[2:]
    full.set_epoch(1)
    assert list(full) != all_batches


def test_librispeech_scanner(tmp_path):
    root = tmp_path / "LibriSpeech"
    for subset, spk, ch in [("train-clean-100", "19", "198"), ("train-clean-100", "26", "495"), ("dev-clean", "84", "121")]:
        d = root / subset / spk / ch
        d.mkdir(parents=True)
        lines = []
        for k in range(2):
            uid = f"{spk}-{ch}-{k:04d}"
            _wav(d / f"{uid}.flac", n=16000 + k)
            lines.append(f"{uid} HELLO THERE {k}'S")
        (d / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
    res = scan_librispeech(tmp_path, ["train-clean-100", "dev-clean"], tmp_path / "out")
    train = read_manifest(res["train-clean-100"][0])
    assert len(train) == 4 and {u.speaker for u in train} == {"19", "26"}
    assert train[0].text == "HELLO THERE 0'S" and train[0].num_samples == 16000
    assert len(read_manifest(tmp_path / "out" / "dev-clean.jsonl")) == 2


def test_folder_scan_with_transcripts(tmp_path):
    (tmp_path / "spkA").mkdir()
    _wav(tmp_path / "spkA" / "one.wav")
    (tmp_path / "spkA" / "one.txt").write_text("ONE  TWO\n")
    _wav(tmp_path / "two.wav")
    n, skipped = scan_folder(tmp_path, tmp_path / "m.jsonl")
    utts = {u.id: u for u in read_manifest(tmp_path / "m.jsonl")}
    assert n == 2 and not skipped
    assert utts["spkA/one"].text == "ONE TWO" and utts["spkA/one"].speaker == "spkA"
    assert utts["two"].text is None


def test_fairseq_import_export_round_trip(tmp_path):
    (tmp_path / "wavs").mkdir()
    utts = [Utterance(f"u{i}", _wav(tmp_path / "wavs" / f"u{i}.wav", n=4000 + i), 4000 + i, 16000, f"WORD {i}") for i in range(3)]
    m = tmp_path / "m.jsonl"
    write_manifest(m, utts)
    export_fairseq(m, tmp_path / "train.tsv", tmp_path / "train.wrd", tmp_path / "train.ltr")
    lines = (tmp_path / "train.tsv").read_text().splitlines()
    assert lines[0] == str((tmp_path / "wavs").resolve()) and lines[1] == "u0.wav\t4000"
    assert (tmp_path / "train.ltr").read_text().splitlines()[0] == "W O R D | 0 |"
    import_fairseq(tmp_path / "train.tsv", tmp_path / "back.jsonl", tmp_path / "train.wrd")
    back = read_manifest(tmp_path / "back.jsonl")
    assert [(u.id, u.num_samples, u.text) for u in back] == [(u.id, u.num_samples, u.text) for u in utts]
    (tmp_path / "bad.tsv").write_text("/x\nno-tab-here\n")
    with pytest.raises(ManifestError, match="bad.tsv:2"):
        import_fairseq(tmp_path / "bad.tsv", tmp_path / "o.jsonl")


def test_train_loader_batch_has_padding_and_lengths(tone_corpus):
    loader = build_eval_loader(tone_corpus["train"], max_batch_seconds=6.0, max_batch_size=4)
    batch = next(iter(loader))
    assert batch.wav.shape[0] == len(batch.lengths) == len(batch.ids) <= 4
    assert int(batch.lengths.max()) == batch.wav.shape[1]
    for i, n in enumerate(batch.lengths.tolist()):
        assert torch.all(batch.wav[i, n:] == 0)


def test_data_merge_builds_one_manifest_from_subsets(tmp_path, capsys):
    """`data merge` is how ls960.jsonl (train-clean-100 + train-clean-360 + train-other-500) is made."""
    for subset, ids in {"a": ["1", "2"], "b": ["3"]}.items():
        d = tmp_path / "corpus" / subset
        d.mkdir(parents=True)
        utts = []
        for uid in ids:
            sf.write(d / f"{uid}.wav", np.zeros(800, dtype=np.float32), 16000)
            utts.append(Utterance(uid, str(d / f"{uid}.wav"), 800, 16000, "HI"))
        write_manifest(d / f"{subset}.jsonl", utts)
    out = tmp_path / "manifests" / "all.jsonl"
    a, b = tmp_path / "corpus" / "a" / "a.jsonl", tmp_path / "corpus" / "b" / "b.jsonl"
    assert cli(["data", "merge", str(a), str(b), "--out", str(out)]) == 0
    merged = read_manifest(out)
    assert [u.id for u in merged] == ["1", "2", "3"]
    assert all(json.loads(ln)["path"].startswith("../corpus/") for ln in out.read_text().splitlines())
    assert check_manifest(out).bad == []
    assert cli(["data", "merge", str(a), str(a), "--out", str(tmp_path / "dup.jsonl")]) == 2
    assert "id '1' is also in" in capsys.readouterr().err
