"""``speechdistill demo``: the whole pipeline on the embedded default, offline, on CPU.

Stages: synthesise a speaker-disjoint digits corpus (a fixed test set of 400 utterances from 8 voices
never heard in training) -> take the shipped reference teacher (a HuBERT-architecture encoder trained
from scratch with CTC by this project's own finetune-ctc) -> distill a GenDistiller and a DistilHuBERT
student -> ``speechdistill compare`` on the three frozen encoders (the same CTC head on each, layer
fidelity to the teacher, cost) -> report.md/json + Pareto plots.  The evaluation runs fewer seeds and
tasks than the full comparison protocol to keep the demo's 15-minute budget, and its report says so.
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
    # Evaluation (``speechdistill compare``): seeds per ASR head (the full protocol uses 3) and the
    # corpus's fixed-size test set (one word must not be a point of WER).
    eval_seeds: int = 1
    test_utterances: int = 400
    test_speakers: int = 8

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


# GenDistiller at the demo shape: the best row of the dev-set ablation (bench/gendistiller_ablation.py; table in
# bench/RESULTS.md): a post-LN decoder block initialised from teacher layer 1, as DistilHuBERT's layer is, no
# skip or output projection, FFN 188 so that it has <= 67 % of DistilHuBERT's parameters; trained free-running
# with gradients through the generated history (the method's default).
DEMO_GENDISTILLER = {"decoder_ffn_dim": 188, "output_projection": False, "block_norm": "post", "skip": False,
                     "decoder_init": "teacher", "decoder_init_layers": [1]}


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
        # Validation during training logs the free-running dev loss as it goes.
        train=replace(base.train, steps=cfg.distill_steps, seed=cfg.seed, val_every=max(cfg.distill_steps // 3, 1),
                      save_every=max(cfg.distill_steps // 2, 1), log_every=max(1, min(10, cfg.distill_steps))),
        optim=replace(base.optim, lr=cfg.distill_lr),
        distilhubert=replace(base.distilhubert, targets=targets),
        gendistiller=replace(base.gendistiller, targets=targets, **DEMO_GENDISTILLER),
    )
    # The demo owns its folder: running it again replaces its models.
    run_distill(validated(dcfg), overwrite=True)
    return out / "model"


def compare_config(cfg: DemoConfig, models: dict[str, str], corpus: Path, out: Path):
    """The demo's evaluation: ``speechdistill compare`` (recipe compare/digits) with the demo's head budget."""
    from speechdistill.config import load_config, validated
    from speechdistill.run.compare import CompareConfig

    base = load_config(CompareConfig, "digits", command="compare", validate=False)
    asr = replace(
        base.asr, head=replace(base.asr.head, head=cfg.ctc_head, lstm_hidden=cfg.ctc_lstm_hidden, lstm_layers=1),
        optim=replace(base.asr.optim, lr=cfg.ctc_lr), max_steps=cfg.ctc_steps, val_every=max(1, cfg.ctc_steps // 10),
        patience=4, max_batch_seconds=cfg.max_batch_seconds,
    )
    # In this process (no child per model: the demo's budget), so its report has no peak-memory column;
    # `speechdistill compare` measures memory in a fresh process per model.
    cost = replace(base.cost, threads=cfg.threads or 1, isolate=False, repeats=3)
    if cfg.quick:
        cost = replace(cost, seconds=2.0, repeats=2)
    ccfg = replace(
        base, out=str(out), models=[f"{k}={v}" for k, v in models.items()], reference="teacher",
        data={"corpus": str(corpus)}, seeds=cfg.eval_seeds, asr=asr, cost=cost, smoke=cfg.quick,
        title="speechdistill demo: teacher and students on held-out voices",
    )
    return validated(ccfg)


def _corpus(cfg: DemoConfig, corpus: Path) -> dict[str, str]:
    """Synthesise the corpus, or reuse one made with the same test-set request."""
    import json

    from speechdistill.data.synth.corpus import synthesize_corpus

    info = corpus / "speakers.json"
    if (corpus / "test.jsonl").is_file() and info.is_file():
        doc = json.loads(info.read_text(encoding="utf-8"))
        if doc.get("test_utterances_requested") == cfg.test_utterances and doc.get("seed") == cfg.seed:
            log.info("reusing the corpus in %s", corpus)
            return {s: str(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
    res = synthesize_corpus(corpus, cfg.hours, seed=cfg.seed, text="digits", progress=True, overwrite=True,
                            test_utterances=cfg.test_utterances, test_speakers=cfg.test_speakers)
    return {k: str(v) for k, v in res["manifests"].items()}


def _rows(doc: dict) -> list[dict]:
    """One row per model (report.json), from compare's records."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in doc["records"]):
        by = {r["type"]: r for r in doc["records"] if r["model"] == model}
        asr, fid = by.get("asr", {}), by.get("fidelity", {})
        rows.append({
            "model": model, "how": "frozen encoder + CTC head (speechdistill compare)",
            "encoder_params": asr.get("params"), "macs_per_second": asr.get("macs_per_second"),
            "wer": asr.get("mean"), "wer_ci": [asr.get("ci_low"), asr.get("ci_high")],
            "cer": (asr.get("secondary") or {}).get("cer", {}).get("mean"),
            "rtf": asr.get("rtf"), "threads": asr.get("rtf_threads"), "fidelity_cos": fid.get("mean"),
            "num_utterances": asr.get("test_utterances"), "test_speakers": asr.get("test_speakers"),
            "seeds": asr.get("seeds"), "vs_teacher": asr.get("vs_reference"),
        })
    return rows


def run_demo(cfg: DemoConfig) -> dict:
    import torch

    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.models.load import load_encoder
    from speechdistill.report.demo_report import write_demo_report
    from speechdistill.utils.io import ensure_dir

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = ensure_dir(cfg.out, "demo output folder")
    stages = Stages([
        "synthesise corpus", "distill GenDistiller", "distill DistilHuBERT",
        "compare (cached features, ASR heads, layer fidelity, cost)", "report",
    ])

    stages.next()
    corpus = out / "corpus"
    manifests = _corpus(cfg, corpus)

    teacher_dir = resolve_model_path(cfg.teacher)
    teacher_layers = load_encoder(teacher_dir).num_output_layers
    stages.next()
    gen_dir = _distill(cfg, "gendistiller", manifests, out / "gendistiller", teacher_layers)
    stages.next()
    dh_dir = _distill(cfg, "distilhubert", manifests, out / "distilhubert", teacher_layers)

    stages.next()
    from speechdistill.run.compare import run_compare

    models = {"teacher": teacher_dir, "gendistiller": str(gen_dir), "distilhubert": str(dh_dir)}
    doc = run_compare(compare_config(cfg, models, corpus, out / "compare"))
    rows = _rows(doc)

    stages.next()
    from speechdistill.models.size import student_parameters
    from speechdistill.utils.io import read_json

    students = {}
    for name, d in (("gendistiller", gen_dir), ("distilhubert", dh_dir)):
        info = read_json(Path(d) / "distill_info.json")
        students[name] = {"parameters": student_parameters(d).as_dict(),
                          **{k: info[k] for k in ("initialisation", "training", "heads") if k in info}}
    gen_size, dh_size = student_parameters(gen_dir), student_parameters(dh_dir)
    teacher_row = next(r for r in rows if r["model"] == "teacher")
    meaningful = teacher_row["wer"] is not None and teacher_row["wer"] <= MEANINGFUL_TEACHER_WER
    total = stages.done()
    summary = {
        "config": to_dict(cfg), "manifests": manifests, "teacher": cfg.teacher, "rows": rows,
        "students": students, "param_ratio": gen_size.ratio(dh_size),
        "param_ratio_with_heads": gen_size.ratio_with_heads(dh_size), "meaningful": meaningful, "meaningful_rule": f"teacher (frozen + head) test WER <= {MEANINGFUL_TEACHER_WER}",
        "compare": str(out / "compare" / "compare.json"), "stage_seconds": stages.times, "total_seconds": total,
    }
    write_demo_report(summary, doc, out)
    atomic_write_json(out / "report.json", summary)
    log.info("demo finished in %.0f s: %s", total, out / "report.md")
    return summary
