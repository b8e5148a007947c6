"""A SIGKILL inside a checkpoint write loses nothing: the half-written checkpoint is ignored, --resume
continues from the previous one, and the result is bit-identical to an uninterrupted run (issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from conftest import REPO, tiny_distill_args
from safetensors.torch import load_file

from speechdistill.cli.main import main

# Runs the CLI with the checkpoint writer slowed down: after writing the model of the step-10
# checkpoint it signals the parent (a marker file) and sleeps, so the kill lands mid-checkpoint.
CHILD = """
import os, sys, time
import speechdistill.train.checkpoint as ck

real = ck.atomic_save_safetensors

def slow(path, tensors, metadata=None):
    real(path, tensors, metadata)
    if path.name == "model.safetensors" and path.parent.name == ".step_00000010.tmp":
        open(os.environ["KILL_ME_NOW"], "w").close()
        time.sleep(600)

ck.atomic_save_safetensors = slow
from speechdistill.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

ARGS = ["train.steps=14", "train.save_every=5", "gendistiller.dropout=0.1"]


def test_sigkill_inside_a_checkpoint_write_then_resume_is_exact(tone_corpus, tmp_path):
    assert main(tiny_distill_args(tone_corpus, tmp_path / "a", *ARGS)) == 0

    out, marker, script = tmp_path / "b", tmp_path / "marker", tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "KILL_ME_NOW": str(marker)}
    child = subprocess.Popen([sys.executable, str(script), *tiny_distill_args(tone_corpus, out, *ARGS)], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not marker.exists():
        assert child.poll() is None and time.time() < deadline, child.stderr.read()[-2000:] if child.stderr else ""
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    ckpts = out / "checkpoints"
    assert (ckpts / ".step_00000010.tmp" / "model.safetensors").is_file()  # killed mid-checkpoint
    assert not (ckpts / ".step_00000010.tmp" / "trainer_state.json").exists()
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_00000005"]

    assert main(tiny_distill_args(tone_corpus, out, *ARGS, "--resume")) == 0
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # the half checkpoint is gone
