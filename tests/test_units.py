"""`speechdistill units`: k-means over teacher features, frame-aligned labels, resume, refusals."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from speechdistill import SAMPLE_RATE
from speechdistill.cli.main import main
from speechdistill.data.batch import Batch
from speechdistill.data.manifest import read_manifest
from speechdistill.models.factory import tiny_config
from speechdistill.models.frames import config_output_lengths
from speechdistill.run.units import UnitsConfig, run_units
from speechdistill.units.errors import UnitsError
from speechdistill.units.kmeans import KMeansModel
from speechdistill.units.store import UnitLabels


def _cfg(manifest, out, **kw):
    base = {"teacher": "tiny:hubert", "layer": 2, "k": 8, "fit_n_init": 1, "progress": False, "device": "cpu"}
    return UnitsConfig(manifest=manifest, out=str(out), **{**base, **kw})


def test_labels_cover_every_teacher_frame_and_are_sklearns_nearest_centres(tone_corpus, tone_units):
    from sklearn.metrics import pairwise_distances_argmin

    from speechdistill.models.load import load_teacher
    from speechdistill.units.extract import layer_features

    labels = UnitLabels(tone_units["train"])
    km = KMeansModel.load(tone_units["train"])
    assert labels.k == km.k == 8 and labels.hop == 320
    utts = read_manifest(tone_corpus["train"])
    assert len(labels) == len(utts)
    cfg = tiny_config("hubert")
    for u in utts:
        assert len(labels[u.id]) == int(config_output_lengths(cfg, u.num_samples * SAMPLE_RATE // u.sample_rate))
    teacher = load_teacher("tiny:hubert")
    for utt, feats in layer_features(teacher, 2, utts[:4], progress=False):
        ref = pairwise_distances_argmin(feats.numpy(), km.centres.numpy())
        assert np.array_equal(labels[utt.id], ref)
    assert len(set(np.concatenate([labels[u.id] for u in utts]).tolist())) > 1


def test_units_resume_after_interruption_gives_the_same_labels(tone_corpus, tone_units, tmp_path):
    cfg = _cfg(tone_corpus["train"], tmp_path / "u", kmeans=tone_units["train"], shard_size=5)
    first = run_units(replace(cfg, stop_after=2))
    assert not first["complete"] and first["utterances"] == 10
    with pytest.raises(UnitsError, match="incomplete"):
        UnitLabels(tmp_path / "u")
    second = run_units(cfg)
    assert second["complete"] and second["utterances"] == 24
    resumed, ref = UnitLabels(tmp_path / "u"), UnitLabels(tone_units["train"])
    assert len(resumed.meta["shards"]) == 5
    for u in read_manifest(tone_corpus["train"]):
        assert np.array_equal(resumed[u.id], ref[u.id])


def test_units_refuses_a_kmeans_model_of_another_width(tone_corpus, tmp_path, capsys):
    KMeansModel(torch.randn(4, 7)).save(tmp_path / "km7")
    with pytest.raises(UnitsError, match="7-dim centres but layer 2 of teacher tiny:hubert is 32 wide"):
        run_units(_cfg(tone_corpus["dev"], tmp_path / "out", kmeans=str(tmp_path / "km7")))
    rc = main(["units", "teacher=tiny:hubert", "layer=2", f"manifest={tone_corpus['dev']}", f"out={tmp_path / 'o2'}",
               f"kmeans={tmp_path / 'km7'}", "progress=false"])
    assert rc == 2
    assert "7-dim centres" in capsys.readouterr().err


def test_units_refuses_to_mix_settings_in_one_folder(tone_corpus, tone_units, tmp_path):
    run_units(_cfg(tone_corpus["dev"], tmp_path / "u", kmeans=tone_units["train"]))
    with pytest.raises(UnitsError, match="other settings .*layer"):
        run_units(_cfg(tone_corpus["dev"], tmp_path / "u", kmeans=tone_units["train"], layer=3))


def test_crop_offsets_align_labels(tone_units, tone_corpus):
    from speechdistill.methods.masked_prediction import IGNORE, UnitTargets

    targets = UnitTargets(tone_units["train"], tiny_config("hubert"))
    utt = read_manifest(tone_corpus["train"])[0]
    full = targets.labels[utt.id]
    # a crop starting 3.4 frames in: labels from frame round(3.4) = 3
    batch = Batch(torch.zeros(1, 8000), torch.tensor([8000]), [utt.id], [None], [], torch.tensor([3 * 320 + 128]))
    n = int(config_output_lengths(tiny_config("hubert"), 8000))
    got = targets.batch(batch, torch.tensor([n]), n)
    assert torch.equal(got[0], torch.from_numpy(full[3 : 3 + n]))
    # a batch needing more frames than the utterance has is refused
    long = Batch(torch.zeros(1, 16000 * 9), torch.tensor([16000 * 9]), [utt.id], [None])
    with pytest.raises(UnitsError, match="other audio"):
        targets.batch(long, torch.tensor([449]), 449)
    assert IGNORE < 0


def test_dataset_crops_report_their_offset(tone_corpus):
    from speechdistill.data.audio import load_audio
    from speechdistill.data.dataset import AudioDataset, collate, load_utterances

    utts, _ = load_utterances(tone_corpus["train"])
    ds = AudioDataset(utts, crop_samples=4000, seed=5)
    batch = collate([ds[i] for i in range(3)])
    for i in range(3):
        full = load_audio(utts[i].path)
        off = int(batch.offsets[i])
        assert np.array_equal(batch.wav[i, :4000].numpy(), full[off : off + 4000])
