"""``speechdistill demo``: the whole pipeline on the embedded default, offline, on CPU.

Stages: synthesise a speaker-disjoint digits corpus -> take the shipped reference teacher (a
HuBERT-architecture encoder trained from scratch with CTC by this project's own finetune-ctc) ->
distill a GenDistiller and a DistilHuBERT student -> fine-tune the same CTC head on each frozen
encoder (teacher included) -> evaluate all on the held-out speakers -> report.md/json + a plot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechdistill.config import from_dict, to_dict
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

# A teacher far from chance: empty output scores WER 1.0 and a random digit string about 0.9.
MEANINGFUL_TEACHER_WER = 0.5


@dataclass
class DemoConfig:
    out: str = "demo_out"
    hours: float = 0.3
    seed: int = 0
    teacher: str = "builtin:reference"
    distill_steps: int = 300
    ctc_steps: int = 300
    ctc_head: str = "bilstm"
    ctc_lstm_hidden: int = 128
    ctc_lr: float = 2e-3
    distill_lr: float = 1e-3
    max_batch_seconds: float = 24.0
    threads: int = 0  # 0: torch's default
    quick: bool = False
    extra_distill: list[str] = field(default_factory=list)

    @classmethod
    def quick_mode(cls, out: str) -> DemoConfig:
        return cls(out=out, hours=0.02, distill_steps=4, ctc_steps=4, quick=True)


class Stages:
    """Numbered stage banners with elapsed time: the progress display across the pipeline."""

    def __init__(self, names: list[str]):
        self.names = names
        self.t0 = time.perf_counter()
        self.i = 0
        self.times: dict[str, float] = {}
        self._start = self.t0

    def next(self) -> None:
        now = time.perf_counter()
        if self.i:
            self.times[self.names[self.i - 1]] = now - self._start
        self._start = now
        self.i += 1
        log.info("[stage %d/%d] %s (%.0f s elapsed)", self.i, len(self.names), self.names[self.i - 1], now - self.t0)

    def done(self) -> float:
        now = time.perf_counter()
        if self.i:
            self.times[self.names[self.i - 1]] = now - self._start
        return now - self.t0


def _distill(cfg: DemoConfig, method: str, manifests: dict, out: Path, teacher_layers: int) -> Path:
    from speechdistill.config import load_config
    from speechdistill.distill import DistillConfig, run_distill

    every = max(1, teacher_layers // 2)
    targets = list(range(every, teacher_layers + 1, every))
    # The students' architectures and training modes are the tiny_cpu recipe's (GenDistiller at <= 67 % of
    # DistilHuBERT's encoder parameters, free-running training; see the recipe); validation during
    # training logs the free-running dev loss as it goes.
    overrides = [
        f"method={method}", f"teacher={cfg.teacher}", f"out_dir={out}",
        f"data.train_manifest={manifests['train']}", f"data.dev_manifest={manifests['dev']}",
        f"data.max_batch_seconds={cfg.max_batch_seconds}", f"train.steps={cfg.distill_steps}",
        f"train.seed={cfg.seed}", f"optim.lr={cfg.distill_lr}", f"train.val_every={max(cfg.distill_steps // 3, 1)}",
        f"train.save_every={max(cfg.distill_steps // 2, 1)}", f"train.log_every={max(1, min(10, cfg.distill_steps))}",
        f"distilhubert.targets={targets}", f"gendistiller.targets={targets}", *cfg.extra_distill,
    ]
    dcfg = load_config(DistillConfig, "tiny_cpu", overrides)
    run_distill(dcfg)
    return out / "model"


def _finetune(cfg: DemoConfig, upstream: str, manifests: dict, out: Path):
    from speechdistill.methods.ctc import finetune_config_from_dict, run_finetune

    fcfg = finetune_config_from_dict({
        "out_dir": str(out),
        "ctc": {"upstream": upstream, "head": {"head": cfg.ctc_head, "lstm_hidden": cfg.ctc_lstm_hidden, "lstm_layers": 1}},
        "data": {"train_manifest": manifests["train"], "dev_manifest": manifests["dev"],
                 "max_batch_seconds": cfg.max_batch_seconds, "max_dev_batches": 4},
        "optim": {"lr": cfg.ctc_lr, "warmup_ratio": 0.1},
        "train": {"steps": cfg.ctc_steps, "seed": cfg.seed, "val_every": max(cfg.ctc_steps // 3, 1),
                  "log_every": max(1, min(10, cfg.ctc_steps))},
    })
    run_finetune(fcfg)
    return out / "model"


def run_demo(cfg: DemoConfig) -> dict:
    import torch

    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.data.synth.corpus import synthesize_corpus
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.models.load import load_encoder
    from speechdistill.models.size import student_parameters
    from speechdistill.report.demo_report import write_demo_report
    from speechdistill.report.stats import count_macs
    from speechdistill.utils.io import read_json

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages([
        "synthesise corpus", "distill GenDistiller", "distill DistilHuBERT",
        "CTC head on frozen teacher", "CTC head on frozen GenDistiller", "CTC head on frozen DistilHuBERT",
        "evaluate on held-out speakers", "report",
    ])

    stages.next()
    corpus = out / "corpus"
    if (corpus / "test.jsonl").is_file():
        log.info("reusing the corpus in %s", corpus)
        manifests = {s: str(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
    else:
        res = synthesize_corpus(corpus, cfg.hours, seed=cfg.seed, text="digits", progress=True)
        manifests = {k: str(v) for k, v in res["manifests"].items()}

    teacher_dir = resolve_model_path(cfg.teacher)
    teacher_layers = load_encoder(teacher_dir).num_output_layers
    stages.next()
    gen_dir = _distill(cfg, "gendistiller", manifests, out / "gendistiller", teacher_layers)
    stages.next()
    dh_dir = _distill(cfg, "distilhubert", manifests, out / "distilhubert", teacher_layers)

    ctc_dirs = {}
    for name, upstream in [("teacher", teacher_dir), ("gendistiller", str(gen_dir)), ("distilhubert", str(dh_dir))]:
        stages.next()
        ctc_dirs[name] = _finetune(cfg, upstream, manifests, out / f"ctc_{name}")

    stages.next()
    rows = []
    evals = [(n, d, "frozen encoder + CTC head") for n, d in ctc_dirs.items()]
    if (Path(teacher_dir) / "ctc_config.json").is_file():
        evals.insert(0, ("teacher (shipped CTC)", Path(teacher_dir), "trained end to end with CTC (reference)"))
    for name, model_dir, how in evals:
        rep = evaluate_model(model_dir, manifests["test"], out / "eval" / name.split(" ")[0] / ("shipped" if "shipped" in name else ""),
                             threads=cfg.threads or None)
        enc = load_encoder(Path(model_dir) / "encoder")
        rows.append({
            "model": name, "how": how, "encoder_params": student_parameters(enc).encoder,
            "total_params": rep.get("params", {}),
            "macs_per_second": count_macs(enc, 1.0), "wer": rep["wer"], "cer": rep["cer"], "rtf": rep["rtf"],
            "threads": rep.get("threads"), "num_utterances": rep["num_utterances"], "audio_hours": rep["audio_hours"],
        })

    stages.next()
    students = {}
    for name, d in (("gendistiller", gen_dir), ("distilhubert", dh_dir)):
        info = read_json(Path(d) / "distill_info.json")
        students[name] = {"parameters": student_parameters(d).as_dict(),
                          **{k: info[k] for k in ("initialisation", "training", "heads") if k in info}}
    gen_size, dh_size = student_parameters(gen_dir), student_parameters(dh_dir)
    teacher_row = next(r for r in rows if r["model"] == "teacher")
    meaningful = teacher_row["wer"] <= MEANINGFUL_TEACHER_WER
    total = stages.done()
    summary = {
        "config": to_dict(cfg), "manifests": manifests, "teacher": cfg.teacher, "rows": rows,
        "students": students, "param_ratio": gen_size.ratio(dh_size),
        "param_ratio_with_heads": gen_size.ratio_with_heads(dh_size),
        "meaningful": meaningful, "meaningful_rule": f"teacher (frozen + head) test WER <= {MEANINGFUL_TEACHER_WER}",
        "stage_seconds": stages.times, "total_seconds": total,
    }
    write_demo_report(summary, out)
    atomic_write_json(out / "report.json", summary)
    log.info("demo finished in %.0f s: %s", total, out / "report.md")
    return summary


def demo_config(overrides: dict) -> DemoConfig:
    return from_dict(DemoConfig, overrides)
