"""``speechdistill compare``: end to end on tiny encoders (PyTorch and ONNX rows), resume after an
interruption, bad input refused before any training, the statistics, cost counting, data helpers."""

from __future__ import annotations

import json
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tone_corpus, random_texts

from speechdistill.cli.main import main
from speechdistill.config import ConfigError, load_config
from speechdistill.data.errors import BadInputError
from speechdistill.data.manifest import read_manifest, write_manifest
from speechdistill.evaluation.statistics import SeedScores, interval, paired_difference
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.factory import tiny_encoder
from speechdistill.run.compare import CompareConfig, run_compare

RECORD_KEYS = ("model", "task", "metric", "mean", "ci_low", "ci_high", "seeds", "params", "macs_per_second", "rtf")
TASKS = ("[{name: asr, type: asr, data: corpus}, {name: ks, type: ks, data: corpus}, "
         "{name: sid, type: sid, data: corpus}, {name: fidelity, type: fidelity, data: corpus}, {name: cost, type: cost}]")
FAST = [
    "seeds=2", "asr.head.head=linear", "asr.max_steps=30", "asr.val_every=10", "asr.patience=2",
    "asr.optim.lr=0.01", "utterance.hidden=16", "utterance.max_steps=200", "utterance.val_every=10",
    "utterance.patience=2", "utterance.optim.lr=0.01", "cost.seconds=1.0", "cost.repeats=2", "cost.isolate=false",
    "stats.bootstrap=200",
]


@pytest.fixture(scope="module")
def suite_data(tmp_path_factory):
    """Tone 'speech' with transcripts, a label (number of words) and speakers; a teacher, a student of the
    same depth and the student's ONNX fp32/int8 export."""
    from speechdistill.export.onnx_export import OnnxExportOptions, export_onnx
    from speechdistill.export.parity import ParityOptions

    root = tmp_path_factory.mktemp("cmp")
    for name, n, seed in [("train", 24, 0), ("dev", 8, 1), ("test", 10, 2)]:
        m = make_tone_corpus(root, random_texts(n, seed), name)
        write_manifest(m, [replace(u, label=f"n{len(u.text.split())}") for u in read_manifest(m)])
    tiny_encoder("hubert", seed=0).save_pretrained(root / "teacher")
    tiny_encoder("hubert", seed=1).save_pretrained(root / "student")
    export_onnx(root / "student", root / "onnx", OnnxExportOptions(
        outputs="all", int8=True, parity=ParityOptions(lengths_s=(0.7,), threads=1)))
    return root


def _config(root: Path, out: Path, extra=(), models=None) -> CompareConfig:
    models = models or f"[teacher={root}/teacher,student_int8={root}/onnx/model.int8.onnx]"
    return load_config(CompareConfig, None, [
        f"out={out}", f"data.corpus={root}", f"models={models}", f"tasks={TASKS}", "smoke=true", *FAST, *extra,
    ])


@pytest.fixture(scope="module")
def compared(suite_data, tmp_path_factory):
    """One run interrupted after 3 cells, then the same command again: it must reuse those 3."""
    out = tmp_path_factory.mktemp("cmp_out")
    cfg = _config(suite_data, out)
    done = []

    def stop_after_three(cell):
        done.append(cell.key)
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_compare(cfg, command="test", on_cell=stop_after_three)
    stamps = {k: (out / "cells" / k / "result.json").stat().st_mtime_ns for k in done}
    doc = run_compare(cfg, command="test")
    return out, doc, done, stamps


def test_every_record_has_the_fields_and_sane_intervals(compared):
    _, doc, _, _ = compared
    recs = doc["records"]
    assert {(r["model"], r["task"]) for r in recs} == {
        (m, t) for m in ("teacher", "student_int8") for t in ("asr", "ks", "sid", "fidelity", "cost")}
    for r in recs:
        for k in RECORD_KEYS:
            assert k in r, (r["model"], r["task"], k)
        assert r["params"] > 0 and r["macs_per_second"] > 0 and r["rtf"] > 0
        if r["mean"] is not None:
            assert r["ci_low"] <= r["mean"] + 1e-9 and r["mean"] <= r["ci_high"] + 1e-9
    trained = [r for r in recs if r["type"] in ("asr", "ks", "sid")]
    assert all(r["seeds"] == 2 and len(r["per_seed"]) == 2 for r in trained)
    # Layer fidelity: the teacher against itself is exact; an unrelated student (int8 ONNX file) is not.
    fid = {r["model"]: r for r in recs if r["task"] == "fidelity"}
    assert fid["teacher"]["mean"] == pytest.approx(1.0, abs=1e-3) and fid["teacher"]["secondary"]["l1"]["mean"] < 2e-3
    assert fid["student_int8"]["mean"] < 0.99 and fid["student_int8"]["vs_reference"]["verdict"] == "worse"
    # The ONNX int8 row counts MACs from the file itself: the same architecture, the same MACs.
    macs = {r["model"]: r["macs_per_second"] for r in recs}
    assert macs["student_int8"] == macs["teacher"]
    trained = [r for r in recs if r.get("vs_reference") and r["type"] in ("asr", "ks", "sid")]
    assert len(trained) == 3 and all(d["vs_reference"]["verdict"] == "within noise" for d in trained)
    assert all("2 seed(s) < 3" in d["vs_reference"]["claim_rule"] for d in trained)
    assert doc["versions"]["torch"] and doc["command"] == "test"


def test_heads_stop_early_on_the_dev_split(compared):
    out, doc, _, _ = compared
    for r in (r for r in doc["records"] if r["type"] in ("ks", "sid")):
        for h in r["heads"]:
            assert h["stopped_early"] and h["steps"] < 200 and h["steps"] % 10 == 0 and h["steps"] >= 30
    summary = json.loads((out / "cells/teacher/ks/seed0/head/train_summary.json").read_text())
    assert summary["stopped_early"] is True


def test_report_and_plots(compared):
    from PIL import Image

    out, _, _, _ = compared
    md = (out / "compare.md").read_text()
    assert "SMOKE RUN" in md and "| teacher | pytorch |" in md and "| student_int8 | onnx int8 |" in md
    assert "Command: `test`" in md and "## Against the reference" in md
    for name in ("score_vs_macs.png", "score_vs_rtf.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 600 and im.size[1] > 300
    assert json.loads((out / "compare.json").read_text())["plots"] == ["score_vs_macs.png", "score_vs_rtf.png"]


def test_an_interrupted_run_reuses_its_finished_cells(compared, suite_data):
    out, doc, _, stamps = compared
    n_cells = 2 * (2 + 2 + 2 + 1 + 1)  # models x (asr, ks, sid seeds + fidelity + cost)
    assert doc["cells_reused"] == 3 and doc["cells_computed"] == n_cells - 3
    for k, t in stamps.items():
        assert (out / "cells" / k / "result.json").stat().st_mtime_ns == t, k
    # A third run recomputes nothing; a changed head budget recomputes only the cells it affects.
    again = run_compare(_config(suite_data, out), command="test")
    assert again["cells_computed"] == 0
    changed = run_compare(_config(suite_data, out, ["utterance.hidden=8", "only_tasks=[ks,cost]",
                                                    "pairs=[teacher:student_int8]"]), command="test")
    assert changed["cells_computed"] == 4 and changed["cells_reused"] == 2  # ks x 2 models x 2 seeds; cost kept
    pair = {r["task"]: r["vs_pairs"]["student_int8"] for r in changed["records"] if r["model"] == "teacher"}
    assert pair["ks"]["ci_low"] <= pair["ks"]["mean"] <= pair["ks"]["ci_high"] and pair["cost"]["speedup"] > 0
    assert "## Pairs" in (out / "compare.md").read_text()
    head = json.loads((out / "cells/teacher/ks/seed0/head/model/head_config.json").read_text())
    assert head["head"]["hidden"] == 8  # retrained, not the earlier head left in the cell's folder


# ---------------------------------------------------------------------------------------------
# bad input: a clear error before anything is extracted or trained


def _refused(cfg, exc, match):
    with pytest.raises(exc, match=match):
        run_compare(cfg, command="test")
    assert not (Path(cfg.out) / "cells").exists() and not (Path(cfg.out) / "features").exists()


def test_model_that_does_not_load_is_refused_first(suite_data, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')
    _refused(_config(suite_data, tmp_path / "a", models=f"[ok={suite_data}/teacher,bad={broken}]"), ModelLoadError,
             "not supported")
    _refused(_config(suite_data, tmp_path / "b", models=f"[ok={suite_data}/teacher,bad={tmp_path}/nope]"),
             ModelLoadError, "does not exist")


@pytest.mark.parametrize("task,field,match", [("ks", "label", "no 'label'"), ("sid", "speaker", "no 'speaker'")])
def test_manifest_without_labels_is_refused_first(suite_data, tmp_path, task, field, match):
    for split in ("train", "dev", "test"):
        utts = read_manifest(suite_data / f"{split}.jsonl")
        write_manifest(tmp_path / f"{split}.jsonl", [replace(u, **{field: None}) for u in utts])
    cfg = _config(suite_data, tmp_path / "out", [f"data.corpus={tmp_path}", f"only_tasks=[{task}]"])
    _refused(cfg, BadInputError, match)


def test_unknown_task_is_refused(suite_data, tmp_path, caplog):
    with pytest.raises(ConfigError, match="is not one of"):
        _config(suite_data, tmp_path / "a", ["tasks=[{name: x, type: emotion}]"])
    with pytest.raises(ConfigError, match="unknown task"):
        _config(suite_data, tmp_path / "b", ["only_tasks=[asr,nope]"])
    with pytest.raises(ConfigError, match="pairs entry"):
        run_compare(_config(suite_data, tmp_path / "d", ["pairs=[teacher:nobody]"]))
    rc = main(["compare", "digits", f"--corpus={suite_data}", f"--out={tmp_path}/c", "--tasks", "asr,nope",
               "--models", f"t={suite_data}/teacher"])
    assert rc == 2 and "unknown task(s) ['nope']" in caplog.text
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------
# statistics


def _scores(ids, num, den=None):
    num = np.asarray(num, dtype=float)
    return SeedScores(list(ids), num, np.ones_like(num) if den is None else np.asarray(den, dtype=float))


def test_intervals_cover_seeds_and_utterances():
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(400)]
    base = (rng.random(400) < 0.8).astype(float)
    one = interval([_scores(ids, base)], 1000)
    assert one.mean == pytest.approx(base.mean()) and one.low < one.mean < one.high
    # Seeds that disagree widen the interval: it covers the training noise too.
    flips = [np.where(rng.random(400) < 0.1, 1 - base, base) for _ in range(3)]
    three = interval([_scores(ids, f) for f in flips], 1000)
    assert len(set(three.per_seed)) == 3 and three.high > three.low
    # Identical rows differ by exactly zero; a row wrong on 30 more utterances is worse, paired.
    same = paired_difference([_scores(ids, base)], [_scores(ids, base)], 500)
    assert same.mean == same.low == same.high == 0.0
    worse = base.copy()
    worse[np.flatnonzero(base)[:30]] = 0
    d = paired_difference([_scores(ids, worse)], [_scores(ids, base)], 1000)
    assert d.high < 0 and d.mean == pytest.approx(-30 / 400)


def test_corpus_ratio_not_mean_of_ratios():
    # WER = total errors / total words: a 1-word utterance with 1 error must not weigh like a 20-word one.
    s = _scores(["a", "b"], [1, 0], [1, 20])
    assert interval([s], 200).mean == pytest.approx(1 / 21)


# ---------------------------------------------------------------------------------------------
# cost


def test_count_macs_includes_attention_scores():
    """count_macs against the analytic count of a tiny HuBERT (HF runs attention through SDPA, which
    FlopCounterMode alone does not count on CPU)."""
    from speechdistill.report.stats import count_macs

    enc = tiny_encoder("hubert")
    cfg = enc.config
    n, cin, cnn = 16000, 1, 0
    for c, k, s in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride):
        n = (n - k) // s + 1
        cnn += n * c * cin * k
        cin = c
    T, d, f = n, cfg.hidden_size, cfg.intermediate_size
    proj = T * cfg.conv_dim[-1] * d
    pos = (T + 1) * d * (d // cfg.num_conv_pos_embedding_groups) * cfg.num_conv_pos_embeddings  # padded, then trimmed
    attention_scores = 2 * T * T * d  # Q.K^T and softmax.V over all heads
    layer = 4 * T * d * d + attention_scores + 2 * T * d * f
    assert count_macs(enc, 1.0) == cnn + proj + pos + cfg.num_hidden_layers * layer


def test_onnx_encoder_matches_pytorch_and_counts_the_same_macs(suite_data):
    from speechdistill.evaluation.cost import onnx_macs
    from speechdistill.evaluation.encoders import load_model
    from speechdistill.report.stats import count_macs

    torch_enc = load_model(str(suite_data / "student"))
    onnx_enc = load_model(str(suite_data / "onnx" / "model.onnx"))
    wav = 0.1 * torch.randn(2, 24000)
    lengths = torch.tensor([24000, 17000])
    a, b = torch_enc.encode(wav, lengths), onnx_enc.encode(wav, lengths)
    assert torch.equal(a.frame_lengths, b.frame_lengths) and len(a.hidden_states) == len(b.hidden_states) == 5
    for x, y in zip(a.hidden_states, b.hidden_states):
        for i, n in enumerate(a.frame_lengths.tolist()):
            torch.testing.assert_close(y[i, :n], x[i, :n], atol=1e-4, rtol=1e-4)
    assert onnx_macs(suite_data / "onnx" / "model.int8.onnx", 1.5) == count_macs(torch_enc, 1.5)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(suite_data / "nope.onnx"))


# ---------------------------------------------------------------------------------------------
# data helpers


def _wav(path: Path, seconds: float = 0.3, sr: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (0.2 * np.sin(np.arange(int(seconds * sr)) * 0.3) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(x.tobytes())


def test_labelled_folder_splits(tmp_path):
    rec = tmp_path / "recordings"
    for spk in ("ann", "bob", "cid", "dan"):
        for digit in range(3):
            for take in range(6):
                _wav(rec / f"{digit}_{spk}_{take}.wav")
    _wav(rec / "README.wav")  # does not match the pattern: left out
    out = tmp_path / "out"
    assert main(["data", "labelled-folder", "--root", str(rec), "--out", str(out), "--text-map", "digits",
                 "--test-speakers", "ann", "--dev-speakers", "bob", "--test-takes", "0,1", "--dev-takes", "2"]) == 0
    m = {(s, p): read_manifest(out / s / f"{p}.jsonl") for s in ("speakers", "takes") for p in ("train", "dev", "test")}
    spk = {k: {u.speaker for u in v} for k, v in m.items()}
    assert spk[("speakers", "test")] == {"ann"} and spk[("speakers", "dev")] == {"bob"}
    assert spk[("speakers", "train")] == {"cid", "dan"}
    assert all(spk[("takes", p)] == {"ann", "bob", "cid", "dan"} for p in ("train", "dev", "test"))
    takes = {p: {u.id.rsplit("_", 1)[1] for u in m[("takes", p)]} for p in ("train", "dev", "test")}
    assert takes == {"test": {"0", "1"}, "dev": {"2"}, "train": {"3", "4", "5"}}
    up = read_manifest(out / "upstream" / "train.jsonl") + read_manifest(out / "upstream" / "dev.jsonl")
    assert {u.speaker for u in up} == {"cid", "dan"} and not {u.id.rsplit("_", 1)[1] for u in up} & {"0", "1"}
    u = m[("takes", "test")][0]
    assert u.sample_rate == 8000 and u.label in {"0", "1", "2"} and u.text == ["ZERO", "ONE", "TWO"][int(u.label)]
    assert sum(len(v) for k, v in m.items() if k[0] == "takes") == 4 * 3 * 6


def test_labelled_folder_pattern_errors(tmp_path):
    from speechdistill.data.labelled import pattern_regex

    rx = pattern_regex("{label}/{speaker}_nohash_{take}.wav")
    assert rx.match("yes/abc123_nohash_0.wav").groupdict() == {"label": "yes", "speaker": "abc123", "take": "0"}
    with pytest.raises(BadInputError, match="unknown field"):
        pattern_regex("{label}_{speakr}.wav")
    with pytest.raises(BadInputError, match="must contain"):
        pattern_regex("{label}_{take}.wav")


def test_merge_repeats_and_resolves_paths(suite_data, tmp_path):
    from speechdistill.data.manifest import merge_manifests

    n = merge_manifests([str(suite_data / "train.jsonl"), str(suite_data / "dev.jsonl")], str(tmp_path / "m" / "a.jsonl"),
                        [1, 2])
    utts = read_manifest(tmp_path / "m" / "a.jsonl")
    assert n == len(utts) == 24 + 2 * 8 and sum(u.id.endswith("#r1") for u in utts) == 8
    assert all(Path(u.path).is_file() for u in utts)
    with pytest.raises(BadInputError, match="is also in"):
        merge_manifests([str(suite_data / "dev.jsonl"), str(suite_data / "dev.jsonl")], str(tmp_path / "b.jsonl"))
