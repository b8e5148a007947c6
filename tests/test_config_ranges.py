"""Every config value is range-checked when the config is loaded, for every command (issue 12: values
that passed validation and wrecked training with exit 0, or failed later with a traceback).

Refusals happen at load time (``--print-config`` is enough to see them), name the key and the value,
and exit 2; ``dataclasses.replace`` + ``validated`` applies the same checks to configs built in code.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from conftest import run_cli

from speechdistill.cli.main import main
from speechdistill.config import ConfigError, load_config, validated

# (command args before overrides, override or flags, what the message must say)
BASE = {
    "distill": ["distill", "tiny_cpu"],
    "finetune-ctc": ["finetune-ctc", "superb_asr", "ctc.upstream=x", "data.train_manifest=x.jsonl"],
    "prune": ["prune", "--model", "m", "--calib", "c.jsonl", "--out", "o"],
    "export": ["export", "--model", "m", "--out", "o"],
    "evaluate": ["evaluate", "--model", "m", "--manifest", "x.jsonl", "--out", "o"],
    "demo": ["demo"],
}
CASES = [
    ("distill", ["optim.grad_clip=-1"], r"optim\.grad_clip=-1\.0: must be > 0"),
    ("distill", ["optim.grad_clip=0"], r"optim\.grad_clip=0\.0: must be > 0"),
    ("distill", ["optim.min_lr_ratio=-3"], r"optim\.min_lr_ratio=-3\.0: must be in \[0, 1\]"),
    ("distill", ["optim.lr=nan"], r"optim\.lr: expected a finite number, got nan"),
    ("distill", ["optim.lr=.inf"], r"optim\.lr: expected a finite number, got inf"),
    ("distill", ["optim.lr=0"], r"optim\.lr=0\.0: must be > 0"),
    ("distill", ["optim.betas=[1.5,0.9]"], r"optim\.betas=\[1\.5, 0\.9\]: must be in \[0, 1\)"),
    ("distill", ["optim.betas=[0.9]"], r"optim\.betas=\[0\.9\]: must be two values"),
    ("distill", ["optim.weight_decay=-1"], r"optim\.weight_decay=-1\.0: must be >= 0"),
    ("distill", ["optim.eps=0"], r"optim\.eps=0\.0: must be > 0"),
    ("distill", ["data.max_dev_batches=-1"], r"data\.max_dev_batches=-1: must be >= 0"),
    ("distill", ["data.num_workers=-1"], r"data\.num_workers=-1: must be >= 0"),
    ("distill", ["data.crop_seconds=0.001"], r"data\.crop_seconds=0\.001: crops must be at least 0\.025 s"),
    ("distill", ["data.min_seconds=5", "data.max_seconds=1"], r"data\.min_seconds=5 is above data\.max_seconds=1"),
    ("distill", ["data.max_dev_seconds=-1"], r"data\.max_dev_seconds=-1\.0: must be >= 0"),
    ("distill", ["train.log_every=0"], r"train\.log_every=0: must be >= 1"),
    ("distill", ["train.log_every=-1"], r"train\.log_every=-1: must be >= 1"),
    ("distill", ["train.val_every=-1"], r"train\.val_every=-1: must be >= 0"),
    ("distill", ["train.save_every=-1"], r"train\.save_every=-1: must be >= 0"),
    ("distill", ["train.keep_checkpoints=0"], r"train\.keep_checkpoints=0: must be >= 1"),
    ("distill", ["train.seed=-1"], r"train\.seed=-1: must be in \[0, 4294967295\]"),
    ("distill", ["train.seed=99999999999"], r"train\.seed=99999999999: must be in"),
    ("distill", ["train.steps=0"], r"train\.steps=0: must be >= 1"),
    ("distill", ["gendistiller.targets=[3,2]"], r"gendistiller\.targets=\[3, 2\]: teacher layers must be >= 1 and strictly"),
    ("distill", ["gendistiller.targets=[]"], r"gendistiller\.targets: name at least one teacher layer"),
    ("distill", ["gendistiller.dropout=1.5"], r"gendistiller\.dropout=1\.5: must be in \[0, 1\)"),
    ("distill", ["gendistiller.sampling_end=2"], r"gendistiller\.sampling_end=2\.0: must be in \[0, 1\]"),
    ("distill", ["gendistiller.decoder_layers=0"], r"gendistiller\.decoder_layers=0: must be >= 1"),
    ("distill", ["gendistiller.decoder_hidden_size=30"], r"decoder_hidden_size=30 is not divisible by .*decoder_heads=4"),
    ("distill", ["distilhubert.targets=[0]"], r"distilhubert\.targets=\[0\]: teacher layers must be >= 1"),
    ("distill", ["distilhubert.cnn_grad_scale=-1"], r"distilhubert\.cnn_grad_scale=-1\.0: must be >= 0"),
    ("distill", ["teacher="], r"teacher is required"),
    ("finetune-ctc", ["optim.grad_clip=-1"], r"optim\.grad_clip=-1\.0: must be > 0"),
    ("finetune-ctc", ["ctc.head.dropout=1"], r"ctc\.head\.dropout=1\.0: must be in \[0, 1\)"),
    ("finetune-ctc", ["ctc.encoder_lr_scale=-1"], r"ctc\.encoder_lr_scale=-1: must be >= 0"),
    ("finetune-ctc", ["train.keep_checkpoints=0"], r"train\.keep_checkpoints=0: must be >= 1"),
    ("prune", ["--seed", "-1"], r"seed=-1: must be in \[0, 4294967295\]"),
    ("prune", ["--keep-macs", "nan"], r"keep_macs: expected a finite number, got nan"),
    ("export", ["--parity-lengths", "0.01"], r"parity\.lengths_s .* must be at least 0\.025 s"),
    ("export", ["--seed", "-1"], r"parity\.seed=-1: must be in \[0, 4294967295\]"),
    ("export", ["--int8-ops", "Foo"], r"--int8-ops Foo: unknown op type\(s\) Foo"),
    ("evaluate", ["--threads", "-1"], r"threads=-1: must be >= 0"),
    ("evaluate", ["--max-seconds", "-1"], r"max_seconds=-1\.0: must be >= 0"),
    ("evaluate", ["--device", "gpu0"], r"device='gpu0': choose cpu, cuda, cuda:N or auto"),
    ("demo", ["--hours", "-1"], r"hours=-1\.0: must be > 0"),
    ("demo", ["--distill-steps", "0"], r"distill_steps=0: must be >= 1"),
    ("demo", ["--threads", "-2"], r"threads=-2: must be >= 0"),
]


@pytest.mark.parametrize("command, args, expected", CASES, ids=[f"{c}:{' '.join(a)}" for c, a, _ in CASES])
def test_bad_values_are_refused_when_the_config_is_loaded(command, args, expected, capsys):
    assert main([*BASE[command], *args, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err[-600:]


def test_good_values_still_load(capsys):
    for command, args in BASE.items():
        assert main([*args, "--print-config"]) == 0, (command, capsys.readouterr().err[-600:])
    capsys.readouterr()


def test_a_real_process_refuses_in_one_line():
    res = run_cli("distill", "tiny_cpu", "optim.grad_clip=-1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert next(ln for ln in res.stderr.splitlines() if "ERROR" in ln).endswith(
        "optim.grad_clip=-1.0: must be > 0 (the max gradient norm, e.g. 5; a huge value disables clipping)")


def test_configs_built_in_code_are_checked_the_same_way():
    from speechdistill.run.distill import DistillConfig

    base = load_config(DistillConfig, "tiny_cpu", command="distill")
    bad = dataclasses.replace(base, train=dataclasses.replace(base.train, keep_checkpoints=0))
    with pytest.raises(ConfigError, match=r"train\.keep_checkpoints=0"):
        validated(bad)
    wrong_type = dataclasses.replace(base, method="fitnet")
    with pytest.raises(ConfigError, match=r"method: 'fitnet' is not one of"):
        validated(wrong_type)
    assert validated(base) is base
