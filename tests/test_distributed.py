"""Two processes under ``accelerate launch`` (gloo, CPU) train exactly like one process that accumulates
the same two micro-batches per step, and sharded training (FSDP/DeepSpeed) is refused clearly."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechdistill.config import ConfigError, load_config, recipe_text
from speechdistill.run.distill import DistillConfig, run_distill
from speechdistill.train.engine import refuse_sharded_training

REPO = Path(__file__).resolve().parents[1]


def _overrides(corpus, out):
    # 24 utterances, at most 4 a batch -> 6 batches an epoch: rank r of 2 gets batches r, r+2, r+4, and one
    # process with grad_accum=2 sees (0, 1), (2, 3), (4, 5): the same global batch at every step.
    return ["method=gendistiller", "teacher=tiny:hubert", f"data.train_manifest={corpus['train']}",
            "data.dev_manifest=null", "gendistiller.targets=[1,2,4]", "gendistiller.decoder_heads=4",
            "gendistiller.decoder_ffn_dim=64", "gendistiller.dropout=0.0", "data.crop_seconds=0.6",
            "data.max_batch_size=4", "train.steps=3", "train.log_every=1", "train.save_every=0",
            "train.progress=false", f"out_dir={out}"]


def _losses(out):
    rows = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def test_two_processes_equal_one_process_with_grad_accum(tone_corpus, tmp_path):
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # The 2-CPU-process launch documented in the tiny_cpu recipe, as written.
    line = next(ln for ln in recipe_text("tiny_cpu", "distill")[1].splitlines() if "accelerate launch" in ln)
    documented = shlex.split(line.lstrip("# "))
    res = subprocess.run([*documented, *_overrides(tone_corpus, two)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["step"] == 3
    ckpt = next((two / "checkpoints").glob("step_*"))
    assert (ckpt / "rng_rank0.json").is_file() and (ckpt / "rng_rank1.json").is_file()

    one = tmp_path / "one"
    run_distill(load_config(DistillConfig, "tiny_cpu", [*_overrides(tone_corpus, one), "train.grad_accum=2"]))
    # Bit-identical on this machine: DDP pre-divides each rank's gradient by 2 and sums two of them,
    # accumulation adds two gradients of loss / 2; halving is exact in binary floating point and a sum of
    # two terms does not depend on order.  The tolerance only allows for another BLAS path elsewhere.
    l1, l2 = _losses(one), _losses(two)
    assert len(l1) == len(l2) == 3
    assert l1 == pytest.approx(l2, rel=1e-6, abs=1e-7)
    a = load_file(one / "model" / "model.safetensors")
    b = load_file(two / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_sharded_training_is_refused(kind):
    from accelerate.utils import DistributedType

    with pytest.raises(ConfigError, match="MULTI_GPU"):
        refuse_sharded_training(DistributedType[kind])
    refuse_sharded_training(DistributedType.MULTI_GPU)
    refuse_sharded_training(DistributedType.NO)


@pytest.mark.parametrize("name", ["accelerate_1gpu", "accelerate_8gpu", "accelerate_2nodes_8gpu"])
def test_launch_configs_use_the_tested_path(name):
    """Every shipped launch config loads in accelerate and is plain DDP (or one GPU) with bf16 and no
    accelerate-side compile: the path the 2-process test above checks."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "launch" / f"{name}.yaml"))
    assert cfg.distributed_type.value in ("NO", "MULTI_GPU")
    assert cfg.mixed_precision == "bf16" and not cfg.dynamo_config
    assert cfg.num_processes == {"accelerate_1gpu": 1, "accelerate_8gpu": 8, "accelerate_2nodes_8gpu": 16}[name]
