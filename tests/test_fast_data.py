"""Data that keeps up: pre-decoded shards read the same audio and crops, shape bucketing, crop offsets in
the batch, and persistent workers that still crop per epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechdistill.data.dataset import (
    AudioDataset,
    DataConfig,
    build_train_loader,
    collate,
    load_utterances,
    loader_kwargs,
)
from speechdistill.data.errors import BadAudioError, ManifestError
from speechdistill.data.manifest import read_manifest
from speechdistill.data.predecode import predecode


@pytest.fixture(scope="module")
def shards(tone_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("predecoded")
    # Small shards so that utterances land in several of them.
    res = predecode(tone_corpus["train"], out, shard_seconds=3.0, progress=False)
    return res


def test_predecoded_shards_hold_the_same_audio_and_crops(tone_corpus, shards):
    assert len(shards.shards) > 2 and shards.utterances == 24
    orig, _ = load_utterances(tone_corpus["train"])
    new, _ = load_utterances(str(shards.manifest))
    assert [u.id for u in new] == [u.id for u in orig] and all(u.offset is not None for u in new)
    for crop in (0, 4000):
        a, b = AudioDataset(orig, crop, seed=3), AudioDataset(new, crop, seed=3)
        for epoch in (0, 1):
            for i in range(len(orig)):
                ua, wa, _, oa = a[(epoch, i)]
                _, wb, _, ob = b[(epoch, i)]
                assert oa == ob and np.array_equal(wa, wb), (crop, epoch, ua.id)  # PCM16 -> PCM16: lossless


def test_offset_manifest_lines_are_checked(tmp_path, shards):
    line = json.loads(shards.manifest.read_text().splitlines()[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**line, "path": str(shards.shards[0]), "offset": -1}) + "\n")
    with pytest.raises(ManifestError, match="offset must be a non-negative integer"):
        read_manifest(bad)
    past_end = tmp_path / "past.jsonl"
    past_end.write_text(json.dumps({**line, "path": str(shards.shards[0]), "offset": 10**7}) + "\n")
    utts = read_manifest(past_end)
    _, wav, problem, _ = AudioDataset(utts)[0]
    assert wav is None and "file ends at" in problem
    from speechdistill.data.audio import load_utterance

    with pytest.raises(BadAudioError, match="requested but the file ends"):
        load_utterance(utts[0])


def test_predecode_cli_and_check(tone_corpus, tmp_path, capsys):
    from speechdistill.cli.main import main

    out = tmp_path / "cli"
    assert main(["data", "predecode", tone_corpus["train"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "24 utterances" in printed and "1 shard(s)" in printed
    assert main(["data", "check", str(out / "train.jsonl")]) == 0
    assert "24 ok, 0 bad" in capsys.readouterr().out
    assert main(["data", "predecode", tone_corpus["train"], "--out", str(out), "--shard-seconds", "0"]) == 2


def test_collate_records_offsets_and_pads_ragged_batches_to_a_multiple():
    class U:
        def __init__(self, i):
            self.id, self.text, self.path = f"u{i}", None, f"u{i}.wav"

    items = [(U(0), np.ones(5000, np.float32), None, 0), (U(1), np.ones(3000, np.float32), None, 1234)]
    b = collate(items, pad_multiple=1600)
    assert b.wav.shape == (2, 6400) and b.lengths.tolist() == [5000, 3000] and b.offsets.tolist() == [0, 1234]
    assert float(b.wav[0, 5000:].abs().sum()) == 0
    # Equal lengths: nothing is padded, so the teacher keeps its mask-free attention path.
    even = collate([items[0], (U(2), np.ones(5000, np.float32), None, 7)], pad_multiple=1600)
    assert even.wav.shape == (2, 5000)


def test_loader_kwargs_pin_only_for_a_gpu():
    cfg = DataConfig(train_manifest="x", num_workers=2, prefetch_factor=4)
    assert loader_kwargs(cfg, "cuda") == {"num_workers": 2, "pin_memory": True, "prefetch_factor": 4,
                                          "persistent_workers": True}
    assert loader_kwargs(cfg, "cpu")["pin_memory"] is False
    assert loader_kwargs(DataConfig(train_manifest="x"), "cuda") == {"num_workers": 0, "pin_memory": True}


def test_persistent_workers_crop_for_the_current_epoch(shards):
    """Worker processes that outlive an epoch must still draw that epoch's crops."""

    def crops(workers):
        cfg = DataConfig(train_manifest=str(shards.manifest), crop_seconds=0.25, max_batch_seconds=2.0,
                         max_batch_size=4, num_workers=workers, persistent_workers=True)
        loader, sampler, _ = build_train_loader(cfg, seed=5)
        out = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            out.append({(i, int(o)) for b in loader for i, o in zip(b.ids, b.offsets)})
        return out

    ref = crops(0)
    assert ref[0] != ref[1]
    assert crops(1) == ref
