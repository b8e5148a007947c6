"""The unit-target and WID methods on the one engine: a few steps on tones, dev loss falls, artefacts load."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from speechdistill.config import ConfigError, load_config
from speechdistill.run.distill import DistillConfig, run_distill

WID_TINY = ["wid.hidden_size=16", "wid.intermediate_size=32", "wid.num_attention_heads=2", "wid.w_step=1",
            "wid.mask_updates=1", "wid.attention_updates=1", "wid.weight_lr=1e-4"]


def _cfg(corpus, units, out, method, extra=()):
    return load_config(DistillConfig, "tiny_cpu", [
        f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", f"method={method}",
        "teacher=tiny:hubert", "train.progress=false", "data.crop_seconds=0.6", "train.log_every=5",
        "train.val_every=10", "train.save_every=0", "optim.warmup_ratio=0", f"out_dir={out}",
        f"masked_prediction.labels={units['train']}", f"masked_prediction.dev_labels={units['dev']}",
        "masked_prediction.final_dim=16", "wid_kd.targets=[2,4]", *WID_TINY,
        "masked_units.num_layers=2", "masked_units.hidden_size=16", "masked_units.num_attention_heads=2",
        "masked_units.intermediate_size=32", *extra,
    ])


def _dev(out):
    rows = [json.loads(ln) for ln in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    return [r["dev_loss"] for r in rows if r["split"] == "dev"]


@pytest.mark.parametrize("method,lr", [("wid", 3e-3), ("wid_kd", 3e-3), ("masked_units", 2e-3)])
def test_method_trains_and_writes_a_stock_student(tone_corpus, tone_units, tmp_path, method, lr):
    out = tmp_path / method
    run_distill(_cfg(tone_corpus, tone_units, out, method, ["train.steps=50", f"optim.lr={lr}"]))
    dev = _dev(out)
    assert len(dev) == 5 and dev[-1] < 0.95 * dev[0], dev
    model = AutoModel.from_pretrained(out / "model")
    assert type(model).__name__ == "HubertModel" and model.config.hidden_size == 16
    info = json.loads((out / "model" / "distill_info.json").read_text())
    assert info["method"] == method and info["teacher"] == "tiny:hubert"
    from speechdistill.models.load import load_encoder

    enc = load_encoder(out / "model")
    assert enc.encode(torch.randn(1, 6000)).hidden_states[-1].shape[-1] == 16


def test_wid_resume_restores_masks_and_matches_an_uninterrupted_run(tone_corpus, tone_units, tmp_path):
    extra = ["train.steps=8", "train.save_every=3", "wid.w_step=2", "wid.mask_updates=2", "wid.attention_updates=2",
             "optim.lr=3e-3", "train.val_every=0"]
    run_distill(_cfg(tone_corpus, tone_units, tmp_path / "a", "wid", extra))
    r = run_distill(_cfg(tone_corpus, tone_units, tmp_path / "b", "wid", [*extra, "train.stop_after=3"]))
    assert r.interrupted and r.step == 3
    run_distill(_cfg(tone_corpus, tone_units, tmp_path / "b", "wid", extra), resume=True)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_unit_methods_need_labels_and_a_schedule_that_fits(tone_corpus, tone_units, tmp_path):
    with pytest.raises(ConfigError, match="masked_prediction.labels"):
        load_config(DistillConfig, "tiny_cpu", [f"data.train_manifest={tone_corpus['train']}", "method=wid"])
    cfg = _cfg(tone_corpus, tone_units, tmp_path / "x", "wid", ["train.steps=4", "wid.w_step=5"])
    with pytest.raises(ConfigError, match="before the masks reach their targets at step 5"):
        run_distill(cfg)
