"""``speechdistill demo``: the whole pipeline on the embedded default, offline, on CPU.

Stages: synthesise a speaker-disjoint digits corpus -> take the shipped reference teacher (a
HuBERT-architecture encoder trained from scratch with CTC by this project's own finetune-ctc) ->
distill a GenDistiller and a DistilHuBERT student -> fine-tune the same CTC head on each frozen
encoder (teacher included) -> evaluate all on the held-out speakers -> report.md/json + a plot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from speechdistill.config import to_dict
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
    ctc_head: Literal["linear", "bilstm"] = "bilstm"
    ctc_lstm_hidden: int = 128
    ctc_lr: float = 2e-3
    distill_lr: float = 1e-3
    max_batch_seconds: float = 24.0
    threads: int = 0  # 0: torch's default
    # A smoke run (recipe demo/quick): the report says its numbers are not meaningful.
    quick: bool = False

    def validate(self) -> None:
        from speechdistill.config import SEED_RULE, ConfigError, check_ranges

        if not self.out:
            raise ConfigError("out is required (--out DIR)")
        check_ranges(
            "", self, hours=">0", seed=SEED_RULE, distill_steps=">=1", ctc_steps=">=1", ctc_lstm_hidden=">=1",
            ctc_lr=">0", distill_lr=">0", max_batch_seconds=">0", threads=">=0",
            hints={"threads": "0 = torch's default"},
        )


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
    from speechdistill.config import load_config, validated
    from speechdistill.run.distill import DistillConfig, run_distill

    every = max(1, teacher_layers // 2)
    targets = list(range(every, teacher_layers + 1, every))
    base = load_config(DistillConfig, "tiny_cpu", command="distill", validate=False)
    dcfg = replace(
        base, method=method, teacher=cfg.teacher, out_dir=str(out),
        data=replace(base.data, train_manifest=manifests["train"], dev_manifest=manifests["dev"],
                     max_batch_seconds=cfg.max_batch_seconds),
        train=replace(base.train, steps=cfg.distill_steps, seed=cfg.seed, val_every=0,
                      save_every=max(cfg.distill_steps // 2, 1), log_every=max(1, min(10, cfg.distill_steps))),
        optim=replace(base.optim, lr=cfg.distill_lr),
        distilhubert=replace(base.distilhubert, targets=targets),
        gendistiller=replace(base.gendistiller, targets=targets),
    )
    # The demo owns its folder: running it again replaces its models.
    run_distill(validated(dcfg), overwrite=True)
    return out / "model"


def _finetune(cfg: DemoConfig, upstream: str, manifests: dict, out: Path) -> Path:
    from speechdistill.config import load_config, validated
    from speechdistill.run.finetune import FinetuneConfig, run_finetune

    base = load_config(FinetuneConfig, "demo_head", command="finetune-ctc", validate=False)
    fcfg = replace(
        base, out_dir=str(out),
        ctc=replace(base.ctc, upstream=upstream,
                    head=replace(base.ctc.head, head=cfg.ctc_head, lstm_hidden=cfg.ctc_lstm_hidden)),
        data=replace(base.data, train_manifest=manifests["train"], dev_manifest=manifests["dev"],
                     max_batch_seconds=cfg.max_batch_seconds),
        optim=replace(base.optim, lr=cfg.ctc_lr),
        train=replace(base.train, steps=cfg.ctc_steps, seed=cfg.seed, val_every=max(cfg.ctc_steps // 3, 1),
                      log_every=max(1, min(10, cfg.ctc_steps))),
    )
    run_finetune(validated(fcfg), overwrite=True)
    return out / "model"


def run_demo(cfg: DemoConfig) -> dict:
    import torch

    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.data.synth.corpus import synthesize_corpus
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.models.load import load_encoder
    from speechdistill.report.demo_report import write_demo_report
    from speechdistill.report.stats import count_macs, count_parameters
    from speechdistill.utils.io import ensure_dir

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = ensure_dir(cfg.out, "demo output folder")
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
            "model": name, "how": how, "encoder_params": count_parameters(enc), "total_params": rep.get("params", {}),
            "macs_per_second": count_macs(enc, 1.0), "wer": rep["wer"], "cer": rep["cer"], "rtf": rep["rtf"],
            "threads": rep.get("threads"), "num_utterances": rep["num_utterances"], "audio_hours": rep["audio_hours"],
        })

    stages.next()
    teacher_row = next(r for r in rows if r["model"] == "teacher")
    meaningful = teacher_row["wer"] <= MEANINGFUL_TEACHER_WER
    total = stages.done()
    summary = {
        "config": to_dict(cfg), "manifests": manifests, "teacher": cfg.teacher, "rows": rows,
        "meaningful": meaningful, "meaningful_rule": f"teacher (frozen + head) test WER <= {MEANINGFUL_TEACHER_WER}",
        "stage_seconds": stages.times, "total_seconds": total,
    }
    write_demo_report(summary, out)
    atomic_write_json(out / "report.json", summary)
    log.info("demo finished in %.0f s: %s", total, out / "report.md")
    return summary

