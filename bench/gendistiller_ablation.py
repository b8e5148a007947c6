#!/usr/bin/env python
"""GenDistiller ablation at demo scale: training mode x initialisation x mask x FFN width (equal
parameters), against DistilHuBERT with teacher-copied and random layers.  Dev metrics only.

The demo setting (``speechdistill demo``): teacher ``builtin:reference`` (HuBERT architecture, 4 layers
x 192), targets [2, 4], 300 distillation steps of 24 s batches at lr 1e-3 (the ``tiny_cpu`` recipe),
DistilHuBERT with 1 student layer.  Every GenDistiller row is at <= 67 % of DistilHuBERT's encoder
parameters (``models.size.student_parameters``); rows that change the front end say so.

Stages (``--stage``):
- ``distill``: distil each row; record the free-running and teacher-forced dev layer losses/cosines
  from the engine's last validation, parameters, training FLOPs per step (FlopCounterMode, one fixed
  3 x 4 s batch, teacher included) and measured step throughput.
- ``ctc``: a BiLSTM CTC head (the demo's: 128 units, 1 layer, lr 2e-3) on each frozen student,
  validated every ``--ctc-val-every`` steps on the full dev set and stopped early when dev WER has not
  improved for ``--ctc-patience`` validations (after ``--ctc-min-steps``); the best dev WER is kept.

Each job runs in its own process (1 thread); finished jobs are skipped on a re-run, so the script can
be stopped and restarted.  Writes OUT/ablation.json and OUT/ablation.md.

  python bench/gendistiller_ablation.py --corpus /data/digits2h --out /data/ablation --stage distill
  python bench/gendistiller_ablation.py --corpus /data/digits2h --out /data/ablation --stage ctc \\
      --rows dh-teacher,gd-fr --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TEACHER = "builtin:reference"
TARGETS = [2, 4]
DEMO = [  # speechdistill demo's distillation settings (demo.py `_distill`), whatever the recipe says
    f"teacher={TEACHER}", f"distilhubert.targets={TARGETS}", f"gendistiller.targets={TARGETS}",
    "distilhubert.student_layers=1", "data.max_batch_seconds=24", "optim.lr=1e-3", "train.progress=false",
    "train.save_every=0", "train.log_every=10", "data.max_dev_batches=0",
]
# GenDistiller at <= 67 % of DistilHuBERT (1 layer, 671,936 encoder parameters) at the demo shape.
GD = ["gendistiller.decoder_heads=4", "gendistiller.dropout=0.0", "gendistiller.decoder_layers=1"]
SIZE_A = ["gendistiller.decoder_ffn_dim=188", "gendistiller.output_projection=false"]  # 449,212 (0.669)
SIZE_B = ["gendistiller.decoder_ffn_dim=90", "gendistiller.output_projection=true"]  # 448,538 (0.668)
SIZE_C = ["gendistiller.decoder_ffn_dim=470", "gendistiller.output_projection=false",
          "gendistiller.pos_conv_kernel=16"]  # 447,142 (0.666): front end changed
FR = ["gendistiller.training_mode=free_running"]
TF = ["gendistiller.training_mode=teacher_forced"]
POST_T1 = ["gendistiller.block_norm=post", "gendistiller.skip=false", "gendistiller.decoder_init=teacher",
           "gendistiller.decoder_init_layers=[1]"]


@dataclass
class Row:
    method: str
    overrides: list[str]
    mode: str = "-"
    init: str = "-"
    mask: str = "-"
    ffn: str = "-"
    front_end: str = "teacher's"


ROWS: dict[str, Row] = {
    "dh-teacher": Row("distilhubert", [], "-", "teacher layer 1", "-", "768", "teacher's (no feature LN)"),
    "dh-teacher-nodrop": Row("distilhubert", ["distilhubert.dropout=0.0"], "-", "teacher layer 1, dropout 0", "-",
                             "768", "teacher's (no feature LN)"),
    "dh-random": Row("distilhubert", ["distilhubert.layer_init=random"], "-", "random layer", "-", "768"),
    "dh-linear": Row("distilhubert", ["distilhubert.head_type=linear"], "-", "teacher layer 1 (linear heads)", "-", "768"),
    "dh-pc16": Row("distilhubert", ["distilhubert.pos_conv_kernel=16"], "-", "teacher layer 1", "-", "768",
                   "pos conv 16 taps"),
    # training mode, random pre-LN decoder
    "gd-tf": Row("gendistiller", GD + SIZE_A + TF, "teacher-forced", "random pre-LN", "full", "188"),
    "gd-fr-detached": Row("gendistiller", GD + SIZE_A + FR + ["gendistiller.detach_history=true"],
                          "free-running, detached", "random pre-LN", "full", "188"),
    "gd-fr": Row("gendistiller", GD + SIZE_A + FR, "free-running, unrolled", "random pre-LN", "full", "188"),
    "gd-ss": Row("gendistiller", GD + SIZE_A + [
        "gendistiller.training_mode=scheduled_sampling", "gendistiller.sampling_start=0.0",
        "gendistiller.sampling_end=1.0", "gendistiller.ramp_start=0.0", "gendistiller.ramp_end=0.5"],
        "scheduled 0->1 over first half, unrolled", "random pre-LN", "full", "188"),
    # initialisation
    "gd-fr-post": Row("gendistiller", GD + SIZE_A + FR + ["gendistiller.block_norm=post", "gendistiller.skip=false"],
                      "free-running, unrolled", "random post-LN, no skip", "full", "188"),
    "gd-fr-post-t1": Row("gendistiller", GD + SIZE_A + FR + POST_T1, "free-running, unrolled",
                         "teacher layer 1, post-LN, no skip", "full", "188"),
    "gd-fr-post-t2": Row("gendistiller", GD + SIZE_A + FR + POST_T1[:-1] + ["gendistiller.decoder_init_layers=[2]"],
                         "free-running, unrolled", "teacher layer 2, post-LN, no skip", "full", "188"),
    "gd-fr-post-t1-drop": Row("gendistiller", GD + SIZE_A + FR + POST_T1 + ["gendistiller.dropout=0.1"],
                              "free-running, unrolled, dropout 0.1", "teacher layer 1, post-LN, no skip", "full",
                              "188"),
    "gd-tf-post-t1": Row("gendistiller", GD + SIZE_A + TF + POST_T1, "teacher-forced",
                         "teacher layer 1, post-LN, no skip", "full", "188"),
    # training mode at the best initialisation (one factor changed from gd-fr-post-t1)
    "gd-fr-detached-post-t1": Row("gendistiller", GD + SIZE_A + FR + POST_T1 + ["gendistiller.detach_history=true"],
                                  "free-running, detached", "teacher layer 1, post-LN, no skip", "full", "188"),
    "gd-ss-post-t1": Row("gendistiller", GD + SIZE_A + POST_T1 + [
        "gendistiller.training_mode=scheduled_sampling", "gendistiller.sampling_start=0.0",
        "gendistiller.sampling_end=1.0", "gendistiller.ramp_start=0.0", "gendistiller.ramp_end=0.5"],
        "scheduled 0->1 over first half, unrolled", "teacher layer 1, post-LN, no skip", "full", "188"),
    "gd-fr-pre-t1": Row("gendistiller", GD + SIZE_A + FR + ["gendistiller.decoder_init=teacher",
                                                             "gendistiller.decoder_init_layers=[1]"],
                        "free-running, unrolled", "teacher layer 1 weights in a pre-LN block, skip", "full", "188"),
    # mask (K = 2 targets: "previous" equals "full", step 2 sees steps 1 and 2 either way)
    "gd-fr-post-t1-axial": Row("gendistiller", GD + SIZE_A + FR + POST_T1 + ["gendistiller.mask=axial"],
                               "free-running, unrolled", "teacher layer 1, post-LN, no skip", "axial", "188"),
    # FFN width at equal parameters
    "gd-fr-post-t1-ffn90": Row("gendistiller", GD + SIZE_B + FR + POST_T1, "free-running, unrolled",
                               "teacher layer 1, post-LN, no skip", "full", "90 + W_out"),
    "gd-fr-post-t1-pc16": Row("gendistiller", GD + SIZE_C + FR + POST_T1, "free-running, unrolled",
                              "teacher layer 1, post-LN, no skip", "full", "470", "pos conv 16 taps"),
    # Four generation steps (targets 1, 2, 3, 4; DistilHuBERT keeps [2, 4]): one shared block per teacher
    # layer, more inference FLOPs at the same parameters.  The masks differ from K = 3 on.
    "gd4-fr-post-t1": Row("gendistiller", GD + SIZE_A + FR + POST_T1 + ["gendistiller.targets=[1,2,3,4]"],
                          "free-running, unrolled", "teacher layer 1, post-LN, no skip", "full", "188",
                          "teacher's; targets 1-4"),
    "gd4-fr-post-t1-prev": Row("gendistiller", GD + SIZE_A + FR + POST_T1 + ["gendistiller.targets=[1,2,3,4]",
                                                                             "gendistiller.mask=previous"],
                               "free-running, unrolled", "teacher layer 1, post-LN, no skip", "previous", "188",
                               "teacher's; targets 1-4"),
    "gd4-fr-post-t1-axial": Row("gendistiller", GD + SIZE_A + FR + POST_T1 + ["gendistiller.targets=[1,2,3,4]",
                                                                              "gendistiller.mask=axial"],
                                "free-running, unrolled", "teacher layer 1, post-LN, no skip", "axial", "188",
                                "teacher's; targets 1-4"),
}


# ----------------------------------------------------------------------------------------- workers
def _distill_api():
    try:
        from speechdistill.run.distill import DistillConfig, run_distill
    except ImportError:  # layout after the run/ refactor
        from speechdistill.run.distill import DistillConfig, run_distill
    from speechdistill.config import load_config

    return DistillConfig, run_distill, load_config


def distill_overrides(row: Row, corpus: Path, out: Path, seed: int, steps: int, val_every: int) -> list[str]:
    return [
        f"method={row.method}", *DEMO, f"data.train_manifest={corpus / 'train.jsonl'}",
        f"data.dev_manifest={corpus / 'dev.jsonl'}", f"out_dir={out}", f"train.seed={seed}",
        f"train.steps={steps}", f"train.val_every={val_every}", *row.overrides,
    ]


def worker_distill(job: dict) -> dict:
    DistillConfig, run_distill, load_config = _distill_api()
    cfg = load_config(DistillConfig, "tiny_cpu", job["overrides"])
    res = run_distill(cfg)
    return {"step": res.step, "interrupted": res.interrupted}


def _finetune_api():
    from speechdistill.config import from_dict
    from speechdistill.run.finetune import FinetuneConfig, run_finetune

    return (lambda d: from_dict(FinetuneConfig, d)), run_finetune


class CachedEncoder:
    """A frozen encoder whose outputs are cached by waveform content, so that the CTC head's many epochs
    run the student once per utterance.  Exact up to padding effects (the encoder is frozen, in eval
    mode, and its valid frames do not depend on the batch; tested in tests/test_gendistiller.py at 1e-5).
    Wraps the module returned by ``load_encoder`` for the CTC worker only."""

    def __init__(self, inner):
        import torch

        self.inner = inner
        self.cache: dict[bytes, tuple] = {}
        self._torch = torch

    def _key(self, wav, n: int) -> bytes:
        import hashlib

        return hashlib.sha1(wav[:n].detach().cpu().numpy().tobytes()).digest()

    def encode(self, wav, lengths=None, upto_layer=None):
        torch = self._torch
        from speechdistill.models.encoder import EncoderOutput

        if upto_layer is not None or torch.is_grad_enabled():
            return self.inner.encode(wav, lengths, upto_layer)
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
        keys = [self._key(wav[i], int(lengths[i])) for i in range(wav.shape[0])]
        if any(k not in self.cache for k in keys):
            out = self.inner.encode(wav, lengths)
            for i, k in enumerate(keys):
                n = int(out.frame_lengths[i])
                self.cache[k] = (tuple(h[i, :n].clone() for h in out.hidden_states),
                                 out.last_hidden_state is not None)
        items = [self.cache[k] for k in keys]
        fl = torch.tensor([it[0][0].shape[0] for it in items], dtype=torch.long)
        T = int(fl.max())
        states = []
        for j in range(len(items[0][0])):
            h = items[0][0][j].new_zeros(len(items), T, items[0][0][j].shape[-1])
            for i, it in enumerate(items):
                h[i, : it[0][j].shape[0]] = it[0][j]
            states.append(h)
        return EncoderOutput(tuple(states), fl.to(wav.device), states[-1] if items[0][1] else None)


def _early_stopper(log_path: Path, patience: int, min_steps: int, stop: threading.Event) -> None:
    """SIGINT this process (the engine then checkpoints and stops) once dev WER has not improved for
    ``patience`` validations after ``min_steps``; the engine has already saved the best model."""
    while not stop.wait(2.0):
        if not log_path.is_file():
            continue
        dev = [json.loads(ln) for ln in log_path.read_text().splitlines() if '"split": "dev"' in ln]
        dev = [r for r in dev if "dev_wer" in r]
        if not dev:
            continue
        best_i = min(range(len(dev)), key=lambda i: (dev[i]["dev_wer"], i))
        if len(dev) - 1 - best_i >= patience and dev[-1]["step"] >= min_steps:
            os.kill(os.getpid(), signal.SIGINT)
            return


def worker_ctc(job: dict) -> dict:
    finetune_config_from_dict, run_finetune = _finetune_api()
    out = Path(job["out"])
    cfg = finetune_config_from_dict({
        "out_dir": str(out),
        "ctc": {"upstream": job["upstream"], "head": {"head": "bilstm", "lstm_hidden": 128, "lstm_layers": 1}},
        "data": {"train_manifest": job["train"], "dev_manifest": job["dev"], "max_batch_seconds": 24.0,
                 "max_dev_batches": 0},
        "optim": {"lr": 2e-3, "warmup_ratio": 0.1},
        "train": {"steps": job["max_steps"], "seed": job["seed"], "val_every": job["val_every"], "log_every": 50,
                  "progress": False},
    })
    import speechdistill.models.load as load_module

    original = load_module.load_encoder
    load_module.load_encoder = lambda *a, **k: _cached_module(original(*a, **k))
    stop = threading.Event()
    watcher = threading.Thread(target=_early_stopper, daemon=True,
                               args=(out / "train_log.jsonl", job["patience"], job["min_steps"], stop))
    watcher.start()
    try:
        res = run_finetune(cfg)
    finally:
        stop.set()
    return {"step": res.step, "early_stopped": res.interrupted}


def _cached_module(encoder):
    """An nn.Module facade over ``CachedEncoder`` (CTCModel registers its encoder as a submodule)."""
    from torch import nn

    class Cached(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self._cached = CachedEncoder(inner)

        config = property(lambda self: self.inner.config)
        num_output_layers = property(lambda self: self.inner.num_output_layers)
        hidden_size = property(lambda self: self.inner.hidden_size)

        def encode(self, wav, lengths=None, upto_layer=None):
            return self._cached.encode(wav, lengths, upto_layer)

        def save_pretrained(self, out_dir, **kw):
            return self.inner.save_pretrained(out_dir, **kw)

    return Cached(encoder)


def run_worker(kind: str, job: dict) -> dict:
    import torch

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")
    torch.set_num_threads(1)
    return worker_distill(job) if kind == "distill" else worker_ctc(job)


def spawn(kind: str, job: dict, log_file: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", kind, "--job", json.dumps(job)]
    t0 = time.time()
    with open(log_file, "w") as f:
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} job failed (exit {proc.returncode}); see {log_file}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_seconds"] = time.time() - t0
    return res


# ------------------------------------------------------------------------------------- measurement
def train_flops(row: Row, corpus: Path) -> float:
    """FLOPs of one training step (teacher forward, student forward + backward) on 3 x 4 s of noise."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from speechdistill.data.batch import Batch

    DistillConfig, _, load_config = _distill_api()
    cfg = load_config(DistillConfig, "tiny_cpu", distill_overrides(row, corpus, Path("/tmp/unused"), 0, 300, 0))
    try:
        from speechdistill.run.distill import build_method
    except ImportError:
        from speechdistill.run.distill import build_method
    method = build_method(cfg)
    method.setup(torch.device("cpu"))
    model = method.build_model().train()
    n = 4 * 16000
    batch = Batch(torch.randn(3, n, generator=torch.Generator().manual_seed(0)) * 0.1, torch.full((3,), n), [], [])
    with FlopCounterMode(display=False) as fc:
        loss, _ = method.compute_loss(model, batch, cfg.train.steps // 2)
        loss.backward()
    return float(fc.get_total_flops())


def distill_summary(run: Path) -> dict:
    from speechdistill.models.size import student_parameters

    recs = [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["split"] == "train"]
    dev = [r for r in recs if r["split"] == "dev"]
    last = dev[-1] if dev else {}
    speeds = sorted(r["audio_sec_per_sec"] for r in train if r.get("audio_sec_per_sec"))
    size = student_parameters(run / "model")
    out = {
        "params": size.encoder, "head_params": size.heads,
        "audio_sec_per_sec": speeds[len(speeds) // 2] if speeds else None,
        "dev": {k: v for k, v in last.items() if k.startswith("dev_")},
        "dev_curve": [{"step": r["step"], "dev_loss": r.get("dev_loss"), "dev_tf_loss": r.get("dev_tf_loss")}
                      for r in dev],
    }
    return out


def ctc_summary(run: Path) -> dict:
    recs = [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines()]
    dev = [r for r in recs if r["split"] == "dev" and "dev_wer" in r]
    best = min(dev, key=lambda r: (r["dev_wer"], -r["step"]))
    return {"best_dev_wer": best["dev_wer"], "best_dev_cer": best["dev_cer"], "best_step": best["step"],
            "last_step": dev[-1]["step"], "validations": len(dev)}


# ------------------------------------------------------------------------------------------ report
def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f} (n={len(xs)})"


def _pct(xs: list[float]) -> str:
    if not xs:
        return "-"
    m = 100 * statistics.mean(xs)
    if len(xs) == 1:
        return f"{m:.2f}"
    # t-based 95 % CI of the mean over seeds
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(xs), 2.0)
    half = t * 100 * statistics.stdev(xs) / math.sqrt(len(xs))
    return f"{m:.2f} ± {half:.2f} (n={len(xs)})"


def markdown(results: dict, args) -> str:
    lines = [
        ("GenDistiller ablation at demo scale (teacher builtin:reference, targets [2, 4], "
         f"{args.distill_steps} distillation steps; dev set {args.corpus}/dev.jsonl). "
         "Free-running (FR) = generated from the student's own layers, as at inference; TF = teacher-forced."),
        "",
        ("| row | method | training | initialisation | mask | FFN | front end | params | vs DH | train GFLOP/step "
         "| audio s/s | dev FR loss | dev TF loss | dev FR cos L2 / L4 | dev WER % (CTC) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dh = results.get("dh-teacher", {}).get("params")
    for name, r in results.items():
        row = ROWS[name]
        seeds = r.get("seeds", {})
        if not any(seeds.values()):  # listed (e.g. by --stage report --rows all) but never run
            continue
        fr = [s["dev"].get("dev_loss") for s in seeds.values() if s.get("dev")]
        tf = [s["dev"].get("dev_tf_loss") for s in seeds.values() if s.get("dev", {}).get("dev_tf_loss") is not None]
        c2 = [s["dev"].get(f"dev_cos_L{TARGETS[0]}") for s in seeds.values() if s.get("dev")]
        c4 = [s["dev"].get(f"dev_cos_L{TARGETS[-1]}") for s in seeds.values() if s.get("dev")]
        wer = [s["ctc"]["best_dev_wer"] for s in seeds.values() if s.get("ctc")]
        sp = [s["audio_sec_per_sec"] for s in seeds.values() if s.get("audio_sec_per_sec")]
        params = r.get("params")
        p_txt = f"{params:,}" if params else "-"
        lines.append(
            f"| {name} | {row.method} | {row.mode} | {row.init} | {row.mask} | {row.ffn} | {row.front_end} | "
            f"{p_txt} | {params / dh if params and dh else float('nan'):.3f} | "
            f"{r.get('train_gflop', float('nan')):.1f} | {statistics.median(sp) if sp else float('nan'):.1f} | "
            f"{_mean_sd(fr)} | {_mean_sd(tf) if tf else '-'} | "
            f"{statistics.mean(c2) if c2 else float('nan'):.4f} / {statistics.mean(c4) if c4 else float('nan'):.4f} | "
            f"{_pct(wer)} |"
        )
    lines += ["", ("dev WER: BiLSTM CTC head on the frozen student, best dev WER with early stopping "
                   f"(validation every {args.ctc_val_every} steps, patience {args.ctc_patience}); mean ± t 95 % CI "
                   "over seeds where n > 1.  audio s/s: median logged training throughput (1 thread, shared "
                   "machine).")]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="folder with train.jsonl and dev.jsonl (digits, transcripts)")
    ap.add_argument("--out", type=Path, help="output folder (runs and the ablation.json/.md tables)")
    ap.add_argument("--stage", choices=["distill", "ctc", "report"], default="distill")
    ap.add_argument("--rows", default="all", help="comma list of rows, or all: " + ", ".join(ROWS))
    ap.add_argument("--seeds", default="0", help="comma list of seeds")
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--distill-val-every", type=int, default=150)
    ap.add_argument("--ctc-max-steps", type=int, default=2000)
    ap.add_argument("--ctc-val-every", type=int, default=100)
    ap.add_argument("--ctc-patience", type=int, default=4)
    ap.add_argument("--ctc-min-steps", type=int, default=600)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, json.loads(args.job))))
        return 0
    if args.corpus is None or args.out is None:
        ap.error("--corpus and --out are required")
    rows = list(ROWS) if args.rows == "all" else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    table_path = args.out / "ablation.json"
    results: dict = json.loads(table_path.read_text())["rows"] if table_path.is_file() else {}

    def save() -> None:
        ordered = {k: results[k] for k in ROWS if k in results}
        table_path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": ordered,
                                          "row_specs": {k: asdict(ROWS[k]) for k in ordered}}, indent=2))
        (args.out / "ablation.md").write_text(markdown(ordered, args))

    for name in rows:
        row = ROWS[name]
        entry = results.setdefault(name, {"seeds": {}})
        if args.stage == "distill" and "train_gflop" not in entry:
            entry["train_gflop"] = train_flops(row, args.corpus) / 1e9
        for seed in seeds:
            s = entry["seeds"].setdefault(str(seed), {})
            run = args.out / "runs" / f"{name}_s{seed}"
            if args.stage == "distill" and not (run / "model" / "distill_info.json").is_file():
                job = {"overrides": distill_overrides(row, args.corpus, run, seed, args.distill_steps,
                                                      args.distill_val_every)}
                run.mkdir(parents=True, exist_ok=True)
                print(f"[distill] {name} seed {seed} ...", file=sys.stderr, flush=True)
                s["distill_job"] = spawn("distill", job, run / "worker.log")
            if (run / "model" / "distill_info.json").is_file():
                s.update(distill_summary(run))
                entry["params"] = s["params"]
            if args.stage == "ctc":
                ctc_run = args.out / "runs" / f"{name}_s{seed}_ctc"
                if not (ctc_run / "train_summary.json").is_file() and not s.get("ctc"):
                    if not (run / "model").is_dir():
                        print(f"[ctc] {name} seed {seed}: no distilled student yet, skipped", file=sys.stderr)
                        continue
                    job = {"upstream": str(run / "model"), "out": str(ctc_run), "train": str(args.corpus / "train.jsonl"),
                           "dev": str(args.corpus / "dev.jsonl"), "seed": seed, "max_steps": args.ctc_max_steps,
                           "val_every": args.ctc_val_every, "patience": args.ctc_patience,
                           "min_steps": args.ctc_min_steps}
                    ctc_run.mkdir(parents=True, exist_ok=True)
                    print(f"[ctc] {name} seed {seed} ...", file=sys.stderr, flush=True)
                    s["ctc_job"] = spawn("ctc", job, args.out / "runs" / f"{name}_s{seed}_ctc.log")
                if (ctc_run / "train_log.jsonl").is_file():
                    s["ctc"] = ctc_summary(ctc_run)
            save()
            if s.get("dev"):
                wer = f", dev WER {s['ctc']['best_dev_wer']:.4f}" if s.get("ctc") else ""
                print(f"[done] {name} s{seed}: dev FR loss {s['dev'].get('dev_loss', float('nan')):.4f}, "
                      f"TF {s['dev'].get('dev_tf_loss', float('nan')):.4f}{wer}", file=sys.stderr, flush=True)
    save()
    print((args.out / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
