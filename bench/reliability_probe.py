"""Reliability probe (issue 12): run ~270 bad inputs through the CLI and check each fails cleanly.

Every case runs the CLI in a process of its own and checks the exit status, that no traceback (and no
"internal error" line) is printed, that the message names what it must (file, key, value), and
post-conditions: good files kept, no temp folders left, artefacts readable by group and others,
resume falls back or refuses, a second run into a busy out_dir is refused naming the first.
Groups: models (corrupt model directories through every loader), config (out-of-range values for
every command), data, long (a 60-minute file), env (output is a file, disk full via RLIMIT_FSIZE),
outdir, resume, beyond (what else a tester tries), export, perm, concurrency (real processes).

  OMP_NUM_THREADS=1 python bench/reliability_probe.py --work-dir /tmp/sd_probe --fork \
      --out bench/results/reliability_probe.json
``--fork`` forks each case from a process that imported the package once (about 1 s a case instead of
5-30 s; a forked child runs ``cli.main`` like ``python -m speechdistill`` and prints any escaping
exception as a traceback); without it every case is a fresh ``python -m speechdistill``.  Writes the
JSON (every case with its output tail) and a markdown summary beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(os.environ.get("SD_REPO", Path(__file__).resolve().parents[1]))
W = Path(os.environ.get("SD_PROBE_DIR", "/tmp/speechdistill_probe"))
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("SPEECHDISTILL_LOG", None)


FORK = False  # --fork: run each case in a forked child of a process that imported speechdistill once


def _sd_fork(args, timeout, limit_fsize, cwd):
    """Like running ``python -m speechdistill ARGS`` (a new process running cli.main, an escaping
    exception printed as a traceback), without paying the torch/transformers import per case."""
    import tempfile
    import traceback

    out = tempfile.TemporaryFile()  # noqa: SIM115 - the child writes into it by file descriptor
    t0 = time.time()
    pid = os.fork()
    if pid == 0:  # child
        rc = 1
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            os.umask(0o022)
            if limit_fsize:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))
            os.chdir(cwd or W)
            sys.argv = ["speechdistill", *args]
            from speechdistill.cli.main import main as cli_main
            try:
                rc = cli_main(list(args))
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - what the interpreter would print for `python -m`
                traceback.print_exc()
                rc = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(int(rc or 0))
    status = None
    while time.time() - t0 < timeout:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
    if status is None:
        return "timeout", text, time.time() - t0
    rc = os.waitstatus_to_exitcode(status)
    return rc, text, time.time() - t0


def sd(*args, timeout=240, limit_fsize=None, env=None, cwd=None):
    args = [str(a) for a in args]
    if FORK and env is None:
        return _sd_fork(args, timeout, limit_fsize, cwd)

    def pre():
        os.umask(0o022)
        if limit_fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))

    t0 = time.time()
    try:
        p = subprocess.run([PY, "-m", "speechdistill", *map(str, args)], check=False, capture_output=True, text=True,
                           timeout=timeout, env=env or ENV, preexec_fn=pre, cwd=cwd or W)
        return p.returncode, p.stdout + p.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return "timeout", out + err, time.time() - t0


# ------------------------------------------------------------------------------------------ fixtures
C = W / "corpus"


def set_work_dir(path: Path) -> None:
    global W, C
    W, C = Path(path).absolute(), Path(path).absolute() / "corpus"
TINY = ["teacher=tiny:hubert", "train.progress=false", "data.crop_seconds=0.6", "gendistiller.decoder_heads=4",
        "gendistiller.decoder_ffn_dim=64", "gendistiller.targets=[1,2,3,4]", "distilhubert.targets=[2,4]"]


def K0(train="train", dev="dev"):
    return [f"data.train_manifest={C}/{train}.jsonl", f"data.dev_manifest={C}/{dev}.jsonl" if dev else
            "data.dev_manifest=null", *TINY]


def ft_args(out, upstream=None, steps=2):
    return ["--upstream", upstream or str(W / "teacher"), "--train", f"{C}/train.jsonl", "--dev", f"{C}/dev.jsonl",
            "--out", str(out), "--steps", str(steps), "ctc.head.head=linear", "train.progress=false"]


def setup():
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    import numpy as np
    import soundfile as sf
    import torch
    from conftest import make_tone_corpus, random_texts  # the test suite's tone corpus

    from speechdistill.models.factory import tiny_encoder

    torch.set_num_threads(1)
    if not (C / "train.jsonl").exists():
        make_tone_corpus(C, random_texts(24, 0), "train")
        make_tone_corpus(C, random_texts(6, 1), "dev")
    # 60-minute file (noise), as a dev manifest and an evaluation manifest
    long_wav = C / "long60.wav"
    if not long_wav.exists():
        rng = np.random.default_rng(0)
        sf.write(str(long_wav), (0.01 * rng.standard_normal(16000 * 3600)).astype(np.float32), 16000,
                 subtype="PCM_16")
    dev_lines = (C / "dev.jsonl").read_text().splitlines()
    longline = json.dumps({"id": "long60", "path": "long60.wav", "num_samples": 16000 * 3600, "sample_rate": 16000,
                           "text": "AB"})
    (C / "devlong.jsonl").write_text("\n".join([dev_lines[0], longline]) + "\n")
    # a manifest that under-states a file's length (claims 2 s for the 60-minute file)
    lie = json.loads(longline)
    lie["num_samples"] = 32000
    (C / "lie.jsonl").write_text(json.dumps(lie) + "\n")
    (C / "empty.jsonl").write_text("")
    (C / "latin1.jsonl").write_bytes(dev_lines[0].encode() + b"\n" + '{"id": "é", "path": "x.wav"}'.encode("latin-1") + b"\n")
    (C / "latin1.yaml").write_bytes("# r\xe9cipe\nmethod: distilhubert\n".encode("latin-1"))
    (C / "nan.wav").exists() or sf.write(str(C / "nan.wav"), np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")

    # tiny teacher directory and corrupt variants
    from safetensors.torch import load_file, save_file

    teacher = W / "teacher"
    if not teacher.exists():
        tiny_encoder("hubert").save_pretrained(teacher)
    bad = W / "bad"
    shutil.rmtree(bad, ignore_errors=True)
    bad.mkdir()

    def variant(name, edit_state=None, edit_cfg=None, files=None):
        d = bad / name
        shutil.copytree(teacher, d)
        if edit_state:
            sd_ = load_file(d / "model.safetensors")
            edit_state(sd_)
            save_file(sd_, str(d / "model.safetensors"), metadata={"format": "pt"})
        if edit_cfg:
            cfg = json.loads((d / "config.json").read_text())
            edit_cfg(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        for fname, data in (files or {}).items():
            if data is None:
                (d / fname).unlink()
            else:
                (d / fname).write_bytes(data)
        return d

    weights = (teacher / "model.safetensors").read_bytes()
    variant("no_config", files={"config.json": None})
    variant("config_empty_obj", files={"config.json": b"{}"})
    variant("config_list", files={"config.json": b"[1, 2]"})
    variant("config_garbage", files={"config.json": b"\x00\xff garbage"})
    variant("config_latin1", files={"config.json": '{"model_type": "hubert", "x": "\xe9"}'.encode("latin-1")})
    variant("config_bad_type", edit_cfg=lambda c: c.update(model_type="bert"))
    variant("layers_neg", edit_cfg=lambda c: c.update(num_hidden_layers=-3))
    variant("hidden_zero", edit_cfg=lambda c: c.update(hidden_size=0))
    variant("heads_mismatch", edit_cfg=lambda c: c.update(num_attention_heads=5))
    (bad / "empty_dir").mkdir()
    variant("truncated", files={"model.safetensors": weights[: len(weights) // 2]})
    variant("zero_bytes", files={"model.safetensors": b""})
    variant("random_bytes", files={"model.safetensors": os.urandom(4096)})
    variant("no_weights", files={"model.safetensors": None})
    variant("missing_tensor", edit_state=lambda s: s.pop("encoder.layers.0.attention.k_proj.weight"))
    variant("missing_half", edit_state=lambda s: [s.pop(k) for k in sorted(s)[::2]])
    variant("extra_tensor", edit_state=lambda s: s.__setitem__("encoder.layers.0.attention.extra", torch.zeros(3)))
    variant("wrong_shape", edit_state=lambda s: s.__setitem__("encoder.layers.0.attention.k_proj.weight",
                                                              torch.zeros(5, 5)))
    variant("all_nan", edit_state=lambda s: [t.fill_(float("nan")) for t in s.values() if t.is_floating_point()])

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {W}/PWNED",))

    variant("pickle_bin", files={"model.safetensors": None, "pytorch_model.bin": pickle.dumps({"x": Evil()})})
    (bad / "a_file").write_text("not a dir")

    # a trained CTC model (for evaluate/export) and a distill run (for resume cases)
    ctc = W / "ctc"
    if not (ctc / "model" / "ctc_config.json").exists():
        rc, out, _ = sd("finetune-ctc", *ft_args(ctc, steps=3), "--overwrite", timeout=300)
        if rc != 0:
            rc, out, _ = sd("finetune-ctc", *ft_args(ctc, steps=3), timeout=300)
        assert rc == 0, out[-3000:]
    ctc_bad = W / "ctc_bad_encoder"
    shutil.rmtree(ctc_bad, ignore_errors=True)
    shutil.copytree(ctc / "model", ctc_bad)
    shutil.rmtree(ctc_bad / "encoder")
    shutil.copytree(bad / "missing_tensor", ctc_bad / "encoder")
    ctc_bad_head = W / "ctc_bad_head"
    shutil.rmtree(ctc_bad_head, ignore_errors=True)
    shutil.copytree(ctc / "model", ctc_bad_head)
    h = load_file(ctc_bad_head / "ctc_head.safetensors")
    h["output.weight"] = torch.zeros(3, 3)
    save_file(h, str(ctc_bad_head / "ctc_head.safetensors"))
    ctc_bad_cfg = W / "ctc_bad_cfg"
    shutil.rmtree(ctc_bad_cfg, ignore_errors=True)
    shutil.copytree(ctc / "model", ctc_bad_cfg)
    (ctc_bad_cfg / "ctc_config.json").write_text('{"format": "speechdistill-ctc", "format_version": 1}')
    ctc_cfg_list = W / "ctc_cfg_list"
    shutil.rmtree(ctc_cfg_list, ignore_errors=True)
    shutil.copytree(ctc / "model", ctc_cfg_list)
    (ctc_cfg_list / "ctc_config.json").write_text("[1, 2]")


# ------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    args: list | Callable[[], list]
    rc: str = "nonzero"  # "nonzero" | "zero" | "any"
    expect: str | None = None  # regex that must occur in the output
    prepare: Callable[[], None] | None = None
    check: Callable[[str], str | None] | None = None  # returns a problem or None
    timeout: int = 240
    limit_fsize: int | None = None
    group: str = ""
    extra: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(name, args, **kw):
    CASES.append(Case(name, args, **kw))


def out(name):
    return W / "runs" / name


def fresh(name):
    def prep():
        shutil.rmtree(out(name), ignore_errors=True)
    return prep


BAD_MODELS = {
    "no_config": r"config\.json", "config_empty_obj": r"config\.json", "config_list": r"config\.json",
    "config_garbage": r"config\.json", "config_latin1": r"config\.json", "config_bad_type": r"bert",
    "layers_neg": r"num_hidden_layers", "hidden_zero": r"hidden_size", "heads_mismatch": r"heads|hidden_size",
    "empty_dir": r"config\.json|not a model", "truncated": r"model\.safetensors",
    "zero_bytes": r"model\.safetensors", "random_bytes": r"model\.safetensors", "no_weights": r"weights|safetensors",
    "missing_tensor": r"k_proj", "missing_half": r"missing", "extra_tensor": r"attention\.extra",
    "wrong_shape": r"k_proj", "all_nan": r"NaN|nan|not finite", "pickle_bin": r"pytorch_model\.bin",
    "a_file": r"a_file",
}


def no_pwned(_o):
    return "PICKLE PAYLOAD RAN" if (W / "PWNED").exists() else None


def add_cases():
    # --- models, through every command that loads one
    for name, rx in BAD_MODELS.items():
        d = W / "bad" / name
        case(f"model/{name}/distill-teacher", ["distill", "tiny_cpu", *K0(), f"teacher={d}", "train.steps=1",
             f"out_dir={out('bm_' + name)}"], expect=rx, prepare=fresh("bm_" + name), check=no_pwned, group="models")
        case(f"model/{name}/export", ["export", "--model", d, "--out", out("bx_" + name)], expect=rx, group="models",
             check=no_pwned)
        if name in ("layers_neg", "missing_tensor", "all_nan", "truncated", "config_list", "pickle_bin"):
            case(f"model/{name}/finetune", ["finetune-ctc", *ft_args(out("bf_" + name), upstream=str(d))],
                 expect=rx, prepare=fresh("bf_" + name), group="models", check=no_pwned)
            case(f"model/{name}/prune", ["prune", "--model", d, "--calib", f"{C}/dev.jsonl", "--out",
                 out("bp_" + name), "--keep-macs", "0.9", "--num-calib", "2"], expect=rx, group="models")
            case(f"model/{name}/student_init", ["distill", "tiny_cpu", *K0(), "method=distilhubert",
                 f"distilhubert.student_init={d}", "train.steps=1", f"out_dir={out('bs_' + name)}"], expect=rx,
                 prepare=fresh("bs_" + name), group="models")
    for d, rx in [(W / "ctc_bad_encoder", "k_proj"), (W / "ctc_bad_head", "output.weight|ctc_head"),
                  (W / "ctc_bad_cfg", "ctc_config.json"), (W / "ctc_cfg_list", "ctc_config.json")]:
        case(f"model/{d.name}/evaluate", ["evaluate", "--model", d, "--manifest", f"{C}/dev.jsonl", "--out",
             out("be_" + d.name)], expect=rx, group="models")
        case(f"model/{d.name}/export-ctc", ["export", "--model", d, "--with-ctc-head", "--out", out("bxc_" + d.name)],
             expect=rx, group="models")
    case("model/hub-id-offline", ["distill", "tiny_cpu", *K0(), "teacher=nobody/nothing", "train.steps=1",
         f"out_dir={out('hub')}"], expect="nobody/nothing", group="models")
    case("model/builtin-unknown", ["export", "--model", "builtin:nope", "--out", out("bn")], expect="nope",
         group="models")
    case("model/tiny-unknown", ["distill", "tiny_cpu", *K0(), "teacher=tiny:bert", "train.steps=1",
         f"out_dir={out('tinyb')}"], expect="tiny:bert", group="models")

    # --- config values, for every command
    bad_train = {
        "optim.grad_clip=-1": "grad_clip", "optim.grad_clip=0": "grad_clip", "optim.min_lr_ratio=-3": "min_lr_ratio",
        "optim.min_lr_ratio=2": "min_lr_ratio", "data.max_dev_batches=-1": "max_dev_batches", "optim.lr=nan": "lr",
        "optim.lr=.inf": "lr", "optim.lr=inf": "lr", "optim.lr=-1": "lr", "optim.lr=0": "lr",
        "train.log_every=0": "log_every", "train.log_every=-1": "log_every", "train.seed=-1": "seed",
        "train.seed=99999999999": "seed", "data.num_workers=-1": "num_workers", "optim.betas=[1.5,0.9]": "betas",
        "optim.betas=[0.9]": "betas", "optim.weight_decay=-1": "weight_decay", "optim.eps=0": "eps",
        "optim.eps=-1": "eps", "gendistiller.targets=[0,99]": "targets", "gendistiller.targets=[3,2]": "targets",
        "gendistiller.targets=[]": "targets", "gendistiller.decoder_layers=0": "decoder_layers",
        "gendistiller.decoder_heads=0": "decoder_heads", "gendistiller.dropout=1.5": "dropout",
        "gendistiller.scheduled_sampling=2": "scheduled_sampling", "gendistiller.decoder_ffn_dim=0": "ffn",
        "gendistiller.decoder_heads=3": "heads", "gendistiller.decoder_hidden_size=-5": "decoder_hidden_size",
        "train.save_every=-1": "save_every", "train.val_every=-1": "val_every",
        "train.keep_checkpoints=0": "keep_checkpoints", "train.keep_checkpoints=-2": "keep_checkpoints",
        "train.steps=0": "steps", "train.grad_accum=0": "grad_accum", "train.stop_after=-1": "stop_after",
        "data.max_batch_seconds=0": "max_batch_seconds", "data.max_batch_size=0": "max_batch_size",
        "data.crop_seconds=0.001": "crop_seconds", "data.min_seconds=5 data.max_seconds=1": "min_seconds",
        "optim.warmup_ratio=1": "warmup_ratio", "train.mixed_precision=fp8": "mixed_precision",
        "distilhubert.targets=[0]": "targets", "distilhubert.targets=[9]": "targets",
        "distilhubert.student_layers=0": "student_layers", "distilhubert.cnn_grad_scale=-1": "cnn_grad_scale",
        "gendistiller.cnn_grad_scale=-1": "cnn_grad_scale", "distilhubert.cos_weight=-1": "cos_weight",
        "optim.lr=abc": "lr", "train.steps=1.5": "steps", "data.dev_manifest=42": "dev_manifest",
        "optim.schedule=exp": "schedule", "out_dir=": "out_dir",
    }
    for ov, rx in bad_train.items():
        method = "distilhubert" if ov.startswith("distilhubert") else "gendistiller"
        case(f"config/distill/{ov}", ["distill", "tiny_cpu", *K0(), f"method={method}", "train.steps=2",
             f"out_dir={out('cfg')}", *ov.split(" "), "--overwrite"], expect=re.escape(rx) if rx != "ffn" else "ffn",
             group="config", timeout=120)
    for ov, rx in {"optim.grad_clip=-1": "grad_clip", "train.seed=-1": "seed", "optim.lr=nan": "lr",
                   "ctc.head.dropout=1": "dropout", "ctc.encoder_lr_scale=-1": "encoder_lr_scale",
                   "ctc.head.lstm_hidden=0": "lstm_hidden", "data.crop_seconds=2": "crop_seconds",
                   "train.keep_checkpoints=0": "keep_checkpoints"}.items():
        case(f"config/finetune/{ov}", ["finetune-ctc", *ft_args(out("cfgf")), ov, "--overwrite"], expect=re.escape(rx),
             group="config", timeout=120)
    for a, rx in {("--keep-macs", "0"): "keep_macs", ("--keep-macs", "1.5"): "keep_macs", ("--keep-macs", "nan"):
                  "keep_macs", ("--num-calib", "0"): "num_calib", ("--threads", "-1"): "threads",
                  ("--seed", "-1"): "seed", ("--max-seconds", "0"): "max_seconds", ("--sketch-rows", "-1"): "sketch_rows",
                  ("--min-heads", "0"): "min_heads", ("--batch-seconds", "-2"): "batch_seconds"}.items():
        case(f"config/prune/{' '.join(a)}", ["prune", "--model", W / "teacher", "--calib", f"{C}/dev.jsonl", "--out",
             out("cfgp"), *a], expect=re.escape(rx), group="config")
    for a, rx in {("--parity-lengths", "0.01"): "lengths", ("--parity-lengths", "nan"): "lengths",
                  ("--parity-lengths", "abc"): "parity-lengths", ("--int8", "--int8-ops", "Foo"): "Foo",
                  ("--int8-ops", "Foo"): "Foo", ("--opset", "9"): "opset", ("--tolerance", "-1"): "tolerance|rtol",
                  ("--trace-seconds", "0"): "trace", ("--parity-max-utterances", "0"): "max_utterances",
                  ("--outputs", "99"): "99|outputs", ("--outputs", "abc"): "outputs|abc", ("--threads", "-1"):
                  "threads", ("--seed", "-1"): "seed", ("--atol", "nan"): "atol",
                  ("--parity-manifest", f"{C}/nope.jsonl"): "nope.jsonl",
                  ("--int8-max-wer-increase", "-1"): "int8_max_wer_increase"}.items():
        case(f"config/export/{' '.join(a)}", ["export", "--model", W / "teacher", "--out", out("cfgx"), *a],
             expect=re.escape(rx) if "|" not in rx else rx, group="config")
    for a, rx in {("--threads", "-1"): "threads", ("--batch-size", "-1"): "batch_size",
                  ("--max-batch-seconds", "0"): "max_batch_seconds", ("--device", "cuda"): "cuda",
                  ("--device", "cuda:7"): "cuda", ("--device", "tpu"): "tpu", ("--device", "cpu:x"): "cpu:x",
                  ("--max-batch-seconds", "nan"): "max_batch_seconds"}.items():
        case(f"config/evaluate/{' '.join(a)}", ["evaluate", "--model", W / "ctc" / "model", "--manifest",
             f"{C}/dev.jsonl", "--out", out("cfge"), *a], expect=re.escape(rx), group="config")
    case("config/evaluate/--threads 0", ["evaluate", "--model", W / "ctc" / "model", "--manifest", f"{C}/dev.jsonl",
         "--out", out("cfge0"), "--threads", "0"], rc="zero", group="config")
    for a, rx in {("--hours", "-1"): "hours", ("--distill-steps", "0"): "distill_steps", ("--threads", "-2"): "threads",
                  ("--seed", "-1"): "seed", ("--ctc-steps", "-1"): "ctc_steps"}.items():
        case(f"config/demo/{' '.join(a)}", ["demo", "--out", out("cfgd"), *a], expect=re.escape(rx), group="config")
    for a, rx in {("--hours", "-1"): "hours", ("--hours", "0"): "hours", ("--hours", "nan"): "hours",
                  ("--num-workers", "0"): "num-workers", ("--num-speakers", "0"): "num-speakers",
                  ("--dev-fraction", "1.5"): "dev-fraction", ("--seed", "-1"): "seed"}.items():
        case(f"config/synth/{' '.join(a)}", ["data", "synth", "--out", out("syn"), *a, *(["--hours", "0.001"] if
             a[0] != "--hours" else [])], expect=re.escape(rx).replace("\\-", "[-_]"), group="config")
    case("config/recipe-latin1", ["distill", f"{C}/latin1.yaml", *K0()], expect="latin1.yaml", group="config")
    case("config/recipe-missing", ["distill", f"{C}/nope.yaml", *K0()], expect="nope.yaml", group="config")
    case("config/recipe-not-mapping", ["distill", f"{C}/dev.jsonl"], expect="dev.jsonl", group="config")
    case("config/unknown-key", ["distill", "tiny_cpu", "optim.lrr=1"], expect="optim.lrr", group="config")

    # --- data
    case("data/latin1-manifest/distill", ["distill", "tiny_cpu", *K0("latin1"), "train.steps=1",
         f"out_dir={out('lat')}"], expect="latin1.jsonl", prepare=fresh("lat"), group="data")
    case("data/latin1-manifest/check", ["data", "check", f"{C}/latin1.jsonl"], expect="latin1.jsonl", group="data")
    case("data/latin1-manifest/evaluate", ["evaluate", "--model", W / "ctc" / "model", "--manifest",
         f"{C}/latin1.jsonl", "--out", out("latev")], expect="latin1.jsonl", group="data")
    case("data/latin1-manifest/finetune", ["finetune-ctc", *ft_args(out("latf")), "--train", f"{C}/latin1.jsonl"],
         expect="latin1.jsonl", prepare=fresh("latf"), group="data")
    case("data/check-empty", ["data", "check", f"{C}/empty.jsonl"], expect="empty|no utterance", group="data")
    case("data/check-num-samples-lie", ["data", "check", f"{C}/lie.jsonl"], expect="num_samples", group="data")
    case("data/check-missing", ["data", "check", f"{C}/nope.jsonl"], expect="nope.jsonl", group="data")
    case("data/lie-in-training", ["distill", "tiny_cpu", *K0("lie", None), "train.steps=1", "data.crop_seconds=0",
         f"out_dir={out('lie')}"], expect="long60.wav", prepare=fresh("lie"), group="data", timeout=120)
    case("data/empty-manifest/distill", ["distill", "tiny_cpu", *K0("empty"), "train.steps=1",
         f"out_dir={out('emp')}"], expect="empty.jsonl", prepare=fresh("emp"), group="data")
    case("data/import-fairseq-missing", ["data", "import-fairseq", "--tsv", f"{C}/nope.tsv", "--out", out("fs.jsonl")],
         expect="nope.tsv", group="data")
    case("data/folder-missing", ["data", "folder", "--root", f"{C}/nope", "--out", out("f.jsonl")], expect="nope",
         group="data")
    case("data/export-fairseq-latin1", ["data", "export-fairseq", f"{C}/latin1.jsonl", "--tsv", out("x.tsv")],
         expect="latin1.jsonl", group="data")

    # --- long files
    case("long/dev-manifest", ["distill", "tiny_cpu", *K0("train", "devlong"), "train.steps=2",
         f"out_dir={out('longdev')}"], expect="long60.wav.*3600|3600.*long60.wav", prepare=fresh("longdev"),
         group="long", timeout=150)
    case("long/dev-manifest-skip", ["distill", "tiny_cpu", *K0("train", "devlong"), "train.steps=2",
         "data.on_long_dev=skip", f"out_dir={out('longdevs')}"], rc="zero", prepare=fresh("longdevs"), group="long",
         timeout=150)
    case("long/evaluate-chunked", ["evaluate", "--model", W / "ctc" / "model", "--manifest", f"{C}/devlong.jsonl",
         "--out", out("longev")], rc="zero", group="long", timeout=400)
    case("long/evaluate-error", ["evaluate", "--model", W / "ctc" / "model", "--manifest", f"{C}/devlong.jsonl",
         "--out", out("longev2"), "on_long_audio=error"], expect="long60.wav.*3600|3600.*long60.wav", group="long",
         timeout=120)
    case("long/finetune-dev", ["finetune-ctc", *ft_args(out("longft")), "--dev", f"{C}/devlong.jsonl"],
         expect="long60.wav", prepare=fresh("longft"), group="long", timeout=150)

    # --- environment
    (W / "runs").mkdir(parents=True, exist_ok=True)
    afile = W / "runs" / "a_file"
    afile.write_text("x")
    case("env/out-is-file/distill", ["distill", "tiny_cpu", *K0(), "train.steps=1", f"out_dir={afile}"],
         expect="a_file", group="env")
    case("env/out-under-file/distill", ["distill", "tiny_cpu", *K0(), "train.steps=1", f"out_dir={afile}/sub"],
         expect="a_file", group="env")
    case("env/out-is-file/finetune", ["finetune-ctc", *ft_args(afile)], expect="a_file", group="env")
    case("env/out-is-file/export", ["export", "--model", W / "teacher", "--out", afile], expect="a_file", group="env")
    case("env/out-is-file/evaluate", ["evaluate", "--model", W / "ctc" / "model", "--manifest", f"{C}/dev.jsonl",
         "--out", afile], expect="a_file", group="env")
    case("env/out-is-file/prune", ["prune", "--model", W / "teacher", "--calib", f"{C}/dev.jsonl", "--out", afile,
         "--keep-macs", "0.9", "--num-calib", "2"], expect="a_file", group="env")
    case("env/out-is-file/synth", ["data", "synth", "--out", afile, "--hours", "0.001"], expect="a_file", group="env")
    case("env/out-is-file/check-json", ["data", "check", f"{C}/dev.jsonl", "--json", f"{afile}/r.json"],
         expect="a_file", group="env")
    ro = W / "runs" / "readonly"

    def mk_ro():
        ro.mkdir(exist_ok=True)
        os.chmod(ro, 0o555)
    if os.geteuid() != 0:
        case("env/readonly-out/distill", ["distill", "tiny_cpu", *K0(), "train.steps=1", f"out_dir={ro}/run"],
             expect="readonly", prepare=mk_ro, group="env")
        case("env/readonly-out/export", ["export", "--model", W / "teacher", "--out", f"{ro}/x"], expect="readonly",
             prepare=mk_ro, group="env")
    disk = out("diskfull")

    def no_tmp(d):
        def chk(_o):
            left = [str(p) for p in Path(d).rglob("*") if ".tmp" in p.name or p.name.startswith(".export-")] \
                if Path(d).exists() else []
            return f"temp files left: {left[:3]}" if left else None
        return chk
    case("env/disk-full/distill", ["distill", "tiny_cpu", *K0(), "train.steps=2", f"out_dir={disk}"],
         expect="diskfull|File too large|space", prepare=fresh("diskfull"), limit_fsize=150_000, group="env",
         check=no_tmp(disk))
    case("env/disk-full/export", ["export", "--model", W / "teacher", "--out", out("diskx")], expect="diskx|too large",
         prepare=fresh("diskx"), limit_fsize=150_000, group="env", check=no_tmp(out("diskx")))
    case("env/disk-full/finetune", ["finetune-ctc", *ft_args(out("diskf"))], expect="diskf|too large",
         prepare=fresh("diskf"), limit_fsize=150_000, group="env", check=no_tmp(out("diskf")))
    case("env/disk-full/evaluate", ["evaluate", "--model", W / "ctc" / "model", "--manifest", f"{C}/dev.jsonl",
         "--out", out("diske")], expect="diske|too large", limit_fsize=300, group="env", check=no_tmp(out("diske")))
    case("env/disk-full/prune", ["prune", "--model", W / "teacher", "--calib", f"{C}/dev.jsonl", "--out",
         out("diskp"), "--keep-macs", "0.9", "--num-calib", "2"], expect="diskp|too large", limit_fsize=50_000,
         group="env", check=no_tmp(W / "runs"))

    # --- output directories: used out_dir, overwrite, resume
    used = out("used")

    def mk_used():
        shutil.rmtree(used, ignore_errors=True)
        rc, o, _ = sd("distill", "tiny_cpu", *K0(), "train.steps=6", "train.save_every=2", f"out_dir={used}")
        assert rc == 0, o[-2000:]

    case("outdir/fresh-into-used", ["distill", "tiny_cpu", *K0(), "train.steps=2", f"out_dir={used}"],
         expect="--overwrite", prepare=mk_used, group="outdir")

    def overwrite_keeps_new(_o):
        ck = sorted(p.name for p in (used / "checkpoints").glob("step_*"))
        latest = json.loads((used / "checkpoints" / "latest.json").read_text())["checkpoint"]
        if latest not in ck:
            return f"latest.json -> {latest} but checkpoints are {ck}"
        if any(int(c.split("_")[1]) > 2 for c in ck):
            return f"old run's checkpoints survived --overwrite: {ck}"
        return None
    case("outdir/overwrite", ["distill", "tiny_cpu", *K0(), "train.steps=2", "train.save_every=1", f"out_dir={used}",
         "--overwrite"], rc="zero", check=overwrite_keeps_new, group="outdir")
    case("outdir/resume-and-overwrite", ["distill", "tiny_cpu", *K0(), "train.steps=2", f"out_dir={used}",
         "--overwrite", "--resume"], expect="--resume", group="outdir")
    case("outdir/finetune-into-used", ["finetune-ctc", *ft_args(W / "ctc")], expect="--overwrite", group="outdir")

    res = out("res")

    def mk_res(edit):
        def prep():
            shutil.rmtree(res, ignore_errors=True)
            rc, o, _ = sd("distill", "tiny_cpu", *K0(), "train.steps=12", "train.save_every=3", "train.stop_after=8",
                          "train.keep_checkpoints=3", f"out_dir={res}")
            assert rc == 130, o[-2000:]
            edit(res / "checkpoints")
        return prep

    def latest(ck):
        return ck / json.loads((ck / "latest.json").read_text())["checkpoint"]

    def fell_back(o):
        return None if re.search(r"step_0*6", o) else "did not resume from the previous checkpoint step_6"

    def log_no_dupes(_o):
        steps = [json.loads(ln)["step"] for ln in (res / "train_log.jsonl").read_text().splitlines()
                 if json.loads(ln)["split"] == "train"]
        return None if len(steps) == len(set(steps)) else f"train_log.jsonl repeats steps: {steps}"

    resume_args = ["distill", "tiny_cpu", *K0(), "train.steps=12", "train.save_every=3", "train.keep_checkpoints=3",
                   "train.log_every=1", f"out_dir={res}", "--resume"]
    for name, edit in {
        "garbage-latest-json": lambda ck: (ck / "latest.json").write_text("{{{ garbage"),
        "latest-json-list": lambda ck: (ck / "latest.json").write_text("[1]"),
        "latest-json-missing-target": lambda ck: (ck / "latest.json").write_text('{"checkpoint": "step_99999999"}'),
        "truncated-model": lambda ck: (latest(ck) / "model.safetensors").write_bytes(
            (latest(ck) / "model.safetensors").read_bytes()[:100]),
        "truncated-optimizer": lambda ck: (latest(ck) / "optimizer.safetensors").write_bytes(b""),
        "garbage-optimizer-json": lambda ck: (latest(ck) / "optimizer.json").write_text("nope"),
        "garbage-trainer-state": lambda ck: (latest(ck) / "trainer_state.json").write_text("garbage"),
        "trainer-state-list": lambda ck: (latest(ck) / "trainer_state.json").write_text("[]"),
        "trainer-state-missing-key": lambda ck: (latest(ck) / "trainer_state.json").write_text('{"step": 8}'),
        "missing-rng": lambda ck: (latest(ck) / "rng_rank0.safetensors").unlink(),
        "garbage-rng-json": lambda ck: (latest(ck) / "rng_rank0.json").write_text("{}"),
    }.items():
        expect_fallback = name not in ("garbage-latest-json", "latest-json-list", "latest-json-missing-target")
        case(f"resume/{name}", resume_args, rc="zero", prepare=mk_res(edit), group="resume",
             check=(lambda o, fb=expect_fallback: (fell_back(o) if fb else None) or log_no_dupes(o)))
    case("resume/all-broken", resume_args, expect="no usable checkpoint|cannot resume",
         prepare=mk_res(lambda ck: [(p / "trainer_state.json").write_text("x") for p in ck.glob("step_*")]),
         group="resume")
    case("resume/changed-method", [*resume_args, "method=distilhubert"], expect="method",
         prepare=mk_res(lambda ck: None), group="resume")
    case("resume/changed-arch", [*resume_args, "gendistiller.decoder_layers=2"], expect="decoder_layers|blocks|shape|architecture",
         prepare=mk_res(lambda ck: None), group="resume")
    case("resume/ok-log-no-dupes", resume_args, rc="zero", prepare=mk_res(lambda ck: None), check=log_no_dupes,
         group="resume")

    # --- beyond the issue: what else a tester tries
    def manifest(name, **entry):
        base = {"id": "x", "path": "dev_000.wav", "num_samples": 16000, "sample_rate": 16000, "text": "AB"}
        path = C / f"{name}.jsonl"
        path.write_text(json.dumps({**base, **entry}) + "\n")
        return path
    (C / "dirwav").mkdir(exist_ok=True)
    (C / "zero.wav").write_bytes(b"")
    import numpy as np_
    import soundfile as sf_
    sf_.write(str(C / "sr8k.wav"), np_.zeros(8000, np_.float32), 8000)
    dup = C / "dup.jsonl"
    first = (C / "dev.jsonl").read_text().splitlines()[0]
    dup.write_text(first + "\n" + first + "\n")
    beyond = {
        "audio-is-dir": (manifest("b_dir", path="dirwav"), "dirwav"),
        "zero-byte-wav": (manifest("b_zero", path="zero.wav"), "zero.wav"),
        "rate-mismatch": (manifest("b_sr", path="sr8k.wav", num_samples=8000), "sr8k.wav"),
        "nan-audio": (manifest("b_nan", path="nan.wav", num_samples=8000), "nan.wav"),
        "duplicate-ids": (dup, "duplicate id"),
        "no-text": (manifest("b_notext", text=None), "text"),
    }
    for name, (m, rx) in beyond.items():
        # distillation needs no transcripts: that one must simply run
        case(f"beyond/{name}/distill", ["distill", "tiny_cpu", *K0(), f"data.train_manifest={m}", "train.steps=1",
             f"out_dir={out('b_' + name)}", "--overwrite"], expect=None if name == "no-text" else rx,
             rc="zero" if name == "no-text" else "nonzero", group="beyond")
        case(f"beyond/{name}/evaluate", ["evaluate", "--model", W / "ctc" / "model", "--manifest", m, "--out",
             out("be_" + name)], expect=rx if name != "no-text" else "text", group="beyond")
    case("beyond/manifest-is-dir", ["data", "check", C / "dirwav"], expect="dirwav", group="beyond")
    case("beyond/yaml-tag-override", ["distill", "tiny_cpu", "optim.lr=!!python/object/apply:os.system [\"true\"]",
         "--print-config"], expect="optim.lr", group="beyond")
    tagged = C / "tagged.yaml"
    tagged.write_text("optim: !!python/object/apply:os.system ['touch PWNED2']\n")
    case("beyond/yaml-tag-recipe", ["distill", tagged, "--print-config"], expect="tagged.yaml", group="beyond",
         check=lambda o: "YAML RAN" if (W / "PWNED2").exists() else None)
    case("beyond/log-level-bad", ["--log-level", "LOUD", "distill", "tiny_cpu", "--print-config"], expect="LOUD",
         group="beyond")
    case("beyond/stray-positional", ["distill", "tiny_cpu", "foo"], expect="foo", group="beyond")
    case("beyond/empty-key-segment", ["distill", "tiny_cpu", "optim..lr=1", "--print-config"], expect="optim", group="beyond")
    case("beyond/recipe-unknown", ["recipes", "nope"], expect="nope", group="beyond")
    case("beyond/evaluate-encoder-dir", ["evaluate", "--model", W / "teacher", "--manifest", f"{C}/dev.jsonl", "--out",
         out("bee")], expect="ctc_config.json", group="beyond")
    case("beyond/evaluate-empty-manifest", ["evaluate", "--model", W / "ctc" / "model", "--manifest", f"{C}/empty.jsonl",
         "--out", out("beem")], expect="empty.jsonl", group="beyond")
    case("beyond/random-upstream-bad-layers", ["finetune-ctc", *ft_args(out("bru"), upstream="random:hubert"),
         "--upstream-config", "preset=tiny,num_hidden_layers=-3"], expect="num_hidden_layers", group="beyond")
    case("beyond/random-upstream-missing-json", ["finetune-ctc", *ft_args(out("brj"), upstream="random:hubert"),
         "--upstream-config", f"{C}/nope.json"], expect="nope.json", group="beyond")
    case("beyond/random-upstream-unknown-family", ["finetune-ctc", *ft_args(out("brf"), upstream="random:bert")],
         expect="bert", group="beyond")
    case("beyond/safetensors-int8", ["export", "--model", W / "teacher", "--format", "safetensors", "--int8", "--out",
         out("bsi")], expect="int8", group="beyond")
    case("beyond/ctc-head-on-encoder", ["export", "--model", W / "teacher", "--with-ctc-head", "--out", out("bch")],
         expect="ctc_config.json|CTC model", group="beyond")
    case("beyond/prune-missing-calib", ["prune", "--model", W / "teacher", "--calib", f"{C}/nope.jsonl", "--out",
         out("bpm")], expect="nope.jsonl", group="beyond")
    case("beyond/prune-magnitude-missing-calib", ["prune", "--method", "magnitude", "--model", W / "teacher", "--calib",
         f"{C}/nope.jsonl", "--out", out("bpmm")], expect="nope.jsonl", group="beyond")
    case("beyond/distilhubert-on-student-teacher", ["distill", "tiny_cpu", *K0(), "method=distilhubert",
         f"teacher={W / 'ctc' / 'model'}", "train.steps=1", f"out_dir={out('bdt')}", "--overwrite"], rc="any",
         group="beyond")
    case("beyond/targets-beyond-teacher", ["distill", "tiny_cpu", *K0(), "gendistiller.targets=[1,2,3,9]",
         "train.steps=1", f"out_dir={out('btt')}", "--overwrite"], expect="targets", group="beyond")
    case("beyond/check-clean-out-under-file", ["data", "check", f"{C}/dev.jsonl", "--clean-out",
         W / "runs" / "a_file" / "clean.jsonl"], expect="a_file", group="beyond")
    case("beyond/train-longer-than-batch", ["distill", "tiny_cpu", *K0("devlong", None), "train.steps=1",
         "data.crop_seconds=0", f"out_dir={out('btl')}", "--overwrite"], expect="long60.wav", group="beyond")

    # --- export artefacts
    xo = out("xkeep")

    def mk_good_export():
        shutil.rmtree(xo, ignore_errors=True)
        rc, o, _ = sd("export", "--model", W / "teacher", "--out", xo, "--int8")
        assert rc == 0, o[-2000:]
        (xo / "stamp").write_text(json.dumps({p.name: p.stat().st_mtime_ns for p in xo.iterdir()}))

    def kept(_o):
        stamp = json.loads((xo / "stamp").read_text())
        for n in ("model.onnx", "model.int8.onnx", "parity.json"):
            if not (xo / n).exists():
                return f"{n} was deleted by the failed export"
            if (xo / n).stat().st_mtime_ns != stamp[n]:
                return f"{n} was replaced by the failed export"
        return None
    case("export/failed-reexport-keeps-previous", ["export", "--model", W / "teacher", "--out", xo, "--int8",
         "--tolerance", "0", "--atol", "0"], expect="parity", prepare=mk_good_export, check=kept, group="export")
    case("export/failed-reexport-bad-model-keeps", ["export", "--model", W / "bad" / "missing_tensor", "--out", xo],
         expect="k_proj", check=kept, group="export")

    # --- artefact permissions
    def modes(root):
        def chk(_o):
            bad = []
            for p in [Path(root), *Path(root).rglob("*")]:
                m = p.stat().st_mode
                if not (m & stat.S_IROTH and m & stat.S_IRGRP) or (p.is_dir() and not m & stat.S_IXOTH):
                    bad.append(f"{p} {oct(m & 0o777)}")
            return f"not readable by group/others: {bad[:4]}" if bad else None
        return chk
    case("perm/distill", ["distill", "tiny_cpu", *K0(), "train.steps=2", "train.save_every=1", f"out_dir={out('pd')}"],
         rc="zero", prepare=fresh("pd"), check=modes(out("pd")), group="perm")
    case("perm/finetune", ["finetune-ctc", *ft_args(out("pf"))], rc="zero", prepare=fresh("pf"),
         check=modes(out("pf")), group="perm")
    case("perm/prune", ["prune", "--model", W / "teacher", "--calib", f"{C}/dev.jsonl", "--out", out("pp"),
         "--keep-macs", "0.95", "--num-calib", "2"], rc="zero", prepare=fresh("pp"), check=modes(out("pp")),
         group="perm")
    case("perm/export-onnx", ["export", "--model", W / "ctc" / "model", "--with-ctc-head", "--int8", "--out",
         out("px")], rc="zero", prepare=fresh("px"), check=modes(out("px")), group="perm")
    case("perm/export-st", ["export", "--model", W / "ctc" / "model", "--with-ctc-head", "--format", "safetensors",
         "--out", out("pxs")], rc="zero", prepare=fresh("pxs"), check=modes(out("pxs")), group="perm")
    case("perm/evaluate", ["evaluate", "--model", W / "ctc" / "model", "--manifest", f"{C}/dev.jsonl", "--out",
         out("pe")], rc="zero", prepare=fresh("pe"), check=modes(out("pe")), group="perm")


def run_concurrency() -> dict:
    """Two distill runs into one out_dir: the second must be refused naming the first (pid/host)."""
    d = out("conc")
    shutil.rmtree(d, ignore_errors=True)
    args = [PY, "-m", "speechdistill", "distill", "tiny_cpu", *K0(), "train.steps=400", f"out_dir={d}"]
    a = subprocess.Popen(args, env=ENV, cwd=W, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while time.time() - t0 < 120 and not (d / "train_log.jsonl").exists():
        time.sleep(0.3)
    rc, o, _ = sd(*args[3:], timeout=120)
    a.send_signal(signal.SIGTERM)
    a.communicate(timeout=120)
    problems = []
    if rc == 0 or rc == "timeout":
        problems.append(f"second run not refused (rc={rc})")
    if str(a.pid) not in o or socket.gethostname() not in o:
        problems.append("message does not name the running one's pid and host")
    if "Traceback" in o:
        problems.append("traceback")
    # stale lock: the first run was killed hard -> a new run must proceed
    b = subprocess.Popen(args, env=ENV, cwd=W, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while time.time() - t0 < 120 and not (d / "train_log.jsonl").exists():
        time.sleep(0.3)
    b.kill()
    b.wait()
    rc2, o2, _ = sd("distill", "tiny_cpu", *K0(), "train.steps=2", f"out_dir={d}", "--resume")
    if rc2 != 0:
        problems.append(f"stale lock after SIGKILL blocks --resume: rc={rc2} {o2[-300:]}")
    # two runs started together into a fresh folder: exactly one runs
    shutil.rmtree(d, ignore_errors=True)
    ps = [subprocess.Popen([*args[:-1], f"out_dir={d}", "train.steps=3"], env=ENV, cwd=W, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in ps]
    rcs = sorted(p.returncode for p in ps)
    if rcs[0] != 0 or rcs[1] == 0:
        problems.append(f"two runs started together: exit codes {rcs}")
    if any("Traceback" in x for x in outs):
        problems.append("traceback when started together")
    return {"name": "concurrency/two-runs-one-out-dir", "ok": not problems, "problems": problems, "output": o[-600:]}


def run_case(c: Case) -> dict:
    if c.prepare:
        try:
            c.prepare()
        except Exception as e:  # noqa: BLE001
            return {"name": c.name, "ok": False, "problems": [f"prepare failed: {e}"], "output": ""}
    args = c.args() if callable(c.args) else c.args
    rc, o, secs = sd(*args, timeout=c.timeout, limit_fsize=c.limit_fsize)
    problems = []
    if rc == "timeout":
        problems.append(f"timeout after {c.timeout} s")
    elif c.rc == "nonzero" and rc == 0:
        problems.append("exit status 0 (expected a failure)")
    elif c.rc == "zero" and rc != 0:
        problems.append(f"exit status {rc} (expected success)")
    if "Traceback" in o:
        problems.append("traceback")
    if "unexpected error" in o:
        problems.append("unexpected-error fallback")
    if c.expect and not re.search(c.expect, o):
        problems.append(f"message lacks /{c.expect}/")
    if c.check:
        try:
            p = c.check(o)
        except Exception as e:  # noqa: BLE001
            p = f"check crashed: {type(e).__name__}: {e}"
        if p:
            problems.append(p)
    err_lines = [ln for ln in o.splitlines() if " ERROR " in ln]
    return {"name": c.name, "ok": not problems, "problems": problems, "rc": rc, "seconds": round(secs, 1),
            "error_line": err_lines[-1][:400] if err_lines else "", "output": o[-600:]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--skip", default="", help="comma-separated substrings of case names to leave out")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-concurrency", action="store_true")
    ap.add_argument("--out", default="reliability_probe.json", help="JSON results (a .md summary goes beside it)")
    ap.add_argument("--work-dir", default=str(W), help="fixtures and run outputs (a few hundred MB: the 60-min file)")
    ap.add_argument("--fork", action="store_true", help="fork each case from a process that imported the package "
                    "once (fast; the concurrency cases always start real processes)")
    a = ap.parse_args()
    global FORK
    if a.fork:
        FORK = True
        os.umask(0o022)
        os.environ.update({k: v for k, v in ENV.items() if k not in os.environ or k in ("PYTHONPATH",)})
        sys.path.insert(0, str(REPO))
        import torch

        from speechdistill.cli.main import build_parser

        build_parser()  # imports every command module once, before any fork
        import speechdistill.export.onnx_export
        import speechdistill.models.load  # noqa: F401

        torch.set_num_threads(1)
    set_work_dir(Path(a.work_dir))
    W.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not a.list:
        setup()
    add_cases()
    skip = [x for x in a.skip.split(",") if x]
    cases = [c for c in CASES if a.only in c.name and not any(x in c.name for x in skip)]
    if a.list:
        print("\n".join(c.name for c in cases), f"\n{len(cases)} cases")
        return 0
    results = []
    for i, c in enumerate(cases):
        r = run_case(c)
        results.append(r)
        print(f"[{i + 1}/{len(cases)}] {'ok  ' if r['ok'] else 'FAIL'} {c.name} ({r.get('seconds')} s) "
              f"{'; '.join(r['problems'])}", flush=True)
    if not a.no_concurrency and "concurrency" in ("concurrency" if not a.only else a.only):
        r = run_concurrency()
        results.append(r)
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']} {'; '.join(r['problems'])}", flush=True)
    failed = [r for r in results if not r["ok"]]
    tb = sum("traceback" in r["problems"] for r in results)
    summary = {"cases": len(results), "failed": len(failed), "tracebacks": tb, "seconds": round(time.time() - t0)}
    Path(a.out).write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    md = Path(a.out).with_suffix(".md")
    groups: dict[str, list] = {}
    for r in results:
        groups.setdefault(r["name"].split("/")[0], []).append(r)
    lines = ["| group | cases | failed | tracebacks |", "|---|---|---|---|"]
    for g, rs in groups.items():
        lines.append(f"| {g} | {len(rs)} | {sum(not r['ok'] for r in rs)} | {sum('traceback' in r['problems'] for r in rs)} |")
    lines.append(f"| all | {len(results)} | {len(failed)} | {tb} |")
    lines += ["", *[f"- FAILED {r['name']}: {'; '.join(r['problems'])}" for r in failed]]
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
