"""Output folders of training runs (issue 12: silent data loss, concurrency, resume).

- A fresh run into a used out_dir refuses unless --overwrite or --resume; --overwrite never deletes
  the new run's own checkpoints (pruning is numeric and ignores other runs' steps).
- A second run into a busy out_dir is refused naming the running one (two real processes); the lock
  of a killed run is taken over.
- --resume falls back from a damaged newest checkpoint to the previous intact one and says so,
  refuses a changed method or architecture with the reason, and never repeats steps in train_log.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_distill_args

from speechdistill.cli.main import main
from speechdistill.train.checkpoint import prune_checkpoints
from speechdistill.utils.lock import lock_path

RESUMABLE = ["train.steps=12", "train.save_every=3", "train.keep_checkpoints=3"]


def _steps(out: Path, split: str = "train") -> list[int]:
    records = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["split"] == split]


def _checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob("step_*"))


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, tone_corpus):
    """A GenDistiller run stopped at step 8 of 12 (checkpoints at steps 3, 6 and 8)."""
    out = tmp_path_factory.mktemp("runs") / "interrupted"
    assert main(tiny_distill_args(tone_corpus, out, *RESUMABLE, "train.stop_after=8")) == 130
    assert _checkpoints(out) == ["step_00000003", "step_00000006", "step_00000008"]
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_a_fresh_run_into_a_used_out_dir_is_refused(interrupted_run, tone_corpus, tmp_path, caplog):
    out = _copy(interrupted_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(tiny_distill_args(tone_corpus, out, "train.steps=2")) == 2
    assert f"out_dir {out} already holds a run (checkpoints up to step 8)" in caplog.text
    assert "--resume to continue it, --overwrite to replace it" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched
    caplog.clear()
    assert main(tiny_distill_args(tone_corpus, out, "train.steps=2", "--resume", "--overwrite")) == 2
    assert "give one of them" in caplog.text


def test_overwrite_replaces_the_old_run_and_keeps_its_own_checkpoints(interrupted_run, tone_corpus, tmp_path):
    out = _copy(interrupted_run, tmp_path)
    assert main(tiny_distill_args(tone_corpus, out, "train.steps=4", "train.save_every=1", "--overwrite")) == 0
    assert _checkpoints(out) == ["step_00000003", "step_00000004"]  # the new run's, not the old step 8
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["checkpoint"] == "step_00000004"
    assert _steps(out) == [1, 2, 3, 4] and (out / "model" / "config.json").is_file()


def test_pruning_is_numeric_and_never_deletes_the_new_checkpoint(tmp_path):
    for step in (3, 4, 99, 100_000_000):
        (tmp_path / f"step_{step:08d}").mkdir()
    prune_checkpoints(tmp_path, keep=1, current=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004", "step_00000099", "step_100000000"]


def test_a_second_run_into_a_busy_out_dir_is_refused_naming_the_first(tone_corpus, tmp_path, caplog):
    out = tmp_path / "busy"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "speechdistill", *tiny_distill_args(
        tone_corpus, out, "train.steps=100000", "method=distilhubert")], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = lock_path(out)
        deadline = time.time() + 180
        while time.time() < deadline and not (lock.is_file() and lock.read_text().strip()):
            assert first.poll() is None, first.stderr.read()[-2000:]
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "speechdistill", *tiny_distill_args(
            tone_corpus, out, "train.steps=2", "--resume")], check=False, cwd=REPO, env=env, capture_output=True, text=True,
            timeout=300)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
        assert f"out_dir {out} is in use by another run (pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "speechdistill distill tiny_cpu" in second.stderr  # the running one's command line
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: the next run must take it over
        first.wait(timeout=60)
    assert main(tiny_distill_args(tone_corpus, out, "train.steps=2", "method=distilhubert", "--resume")) == 0
    assert f"taking over the lock of {out} left by an ended run (pid {first.pid}" in caplog.text
    assert not lock.exists()


@pytest.mark.parametrize("damage, reason", [
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:200]),
     "model.safetensors is not a readable safetensors file"),
    (lambda c: (c / "trainer_state.json").write_text("garbage"), "trainer_state.json is not valid JSON"),
    (lambda c: (c / "trainer_state.json").write_text('{"step": 8}'), "trainer_state.json lacks valid epoch"),
    (lambda c: (c / "rng_rank0.safetensors").unlink(), "rng_rank0.safetensors is missing"),
    (lambda c: (c / "optimizer.json").write_text("[]"), "optimizer.json must hold a JSON object"),
], ids=["truncated-model", "garbage-state", "incomplete-state", "missing-rng", "garbage-optimizer"])
def test_resume_falls_back_from_a_damaged_checkpoint(interrupted_run, tone_corpus, tmp_path, caplog, damage, reason):
    out = _copy(interrupted_run, tmp_path)
    damage(out / "checkpoints" / "step_00000008")
    assert main(tiny_distill_args(tone_corpus, out, *RESUMABLE, "--resume")) == 0
    assert "--resume: cannot use step_00000008" in caplog.text and reason in caplog.text
    assert "fell back to step_00000006, the newest intact checkpoint" in caplog.text
    assert _steps(out) == list(range(1, 13))  # steps 7 and 8 redone, logged once
    assert json.loads((out / "train_summary.json").read_text())["step"] == 12


def test_resume_ignores_a_garbled_pointer_and_keeps_the_log_free_of_repeats(interrupted_run, tone_corpus, tmp_path,
                                                                            caplog):
    out = _copy(interrupted_run, tmp_path)
    (out / "checkpoints" / "latest.json").write_text("{{{")
    with open(out / "train_log.jsonl", "a") as f:  # logged after the last checkpoint, then killed mid-line
        f.write(json.dumps({"step": 9, "split": "train", "loss": 1.0}) + "\n" + '{"step": 1')
    assert main(tiny_distill_args(tone_corpus, out, *RESUMABLE, "--resume")) == 0
    assert "ignoring" in caplog.text and "latest.json" in caplog.text
    assert "resumed from" in caplog.text and "step_00000008" in caplog.text
    assert _steps(out) == list(range(1, 13))


@pytest.mark.parametrize("change, expected", [
    (["method=distilhubert"], "was written by method 'gendistiller', this run is 'distilhubert'"),
    (["gendistiller.decoder_layers=2"], "gendistiller.decoder_layers 1 -> 2"),
])
def test_resume_refuses_a_changed_method_or_architecture(interrupted_run, tone_corpus, tmp_path, caplog, change,
                                                        expected):
    out = _copy(interrupted_run, tmp_path)
    assert main(tiny_distill_args(tone_corpus, out, *RESUMABLE, *change, "--resume")) == 2
    assert expected in caplog.text and "resume with the original settings" in caplog.text
    assert _checkpoints(out) == ["step_00000003", "step_00000006", "step_00000008"]


def test_resume_with_no_usable_checkpoint_is_refused(interrupted_run, tone_corpus, tmp_path, caplog):
    out = _copy(interrupted_run, tmp_path)
    for ckpt in (out / "checkpoints").glob("step_*"):
        (ckpt / "trainer_state.json").write_text("x")
    assert main(tiny_distill_args(tone_corpus, out, *RESUMABLE, "--resume")) == 2
    assert f"--resume: no usable checkpoint in {out / 'checkpoints'}" in caplog.text
    assert "--overwrite" in caplog.text
