"""One cell of the table: a (model, task, seed) run that ends in per-utterance scores on the test set.

Head cells train on the one engine (``train.engine``) from cached features, keep the best head by the
dev metric (early stopping), then score the test set.  Fidelity and cost cells train nothing.
Every result is a JSON document; per-utterance numerators and denominators let ``statistics``
bootstrap any cell and pair any two rows."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from speechdistill.asr.decode import greedy_decode
from speechdistill.asr.metrics import error_rates
from speechdistill.asr.vocab import CharVocab
from speechdistill.config import to_dict
from speechdistill.data.dataset import DataConfig
from speechdistill.evaluation.feature_data import EvalFeatures, FeatureDataset
from speechdistill.evaluation.features import FeatureSet
from speechdistill.evaluation.methods import (
    CachedCTCMethod,
    UtteranceMethod,
    load_ctc_head,
    load_utterance_head,
)
from speechdistill.evaluation.plan import Cell, ModelInfo
from speechdistill.train.checkpoint import latest_checkpoint
from speechdistill.train.engine import TrainConfig, train

if TYPE_CHECKING:
    from speechdistill.run.compare import CompareConfig

log = logging.getLogger(__name__)

HEAD_DIR = "head"


@contextmanager
def _quiet(*names: str):
    """The engine logs every validation and checkpoint; over a suite of heads that drowns the progress bar
    (each head's log is in its train_log.jsonl), so only warnings pass while a head trains."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


class SuiteInterrupted(Exception):
    """A head's training was stopped by a signal (its checkpoint is saved; a rerun continues it)."""


def _train_head(method, cell: Cell, heads, steps: int, val_every: int, patience: int, batch_seconds: float,
                batch_size: int, cell_dir: Path) -> dict:
    """Train (or finish, or reuse) the cell's head; returns what the engine reported."""
    out = cell_dir / HEAD_DIR
    summary_file = out / "train_summary.json"
    if summary_file.is_file() and (out / "model").is_dir():
        return json.loads(summary_file.read_text(encoding="utf-8"))
    train_cfg = TrainConfig(
        steps=steps, seed=int(cell.seed or 0), val_every=val_every, early_stop_patience=patience,
        log_every=max(1, val_every // 2), keep_checkpoints=1, progress=False, mixed_precision="no",
    )
    data_cfg = DataConfig(train_manifest=cell.task.manifests["train"], dev_manifest=cell.task.manifests["dev"],
                          max_batch_seconds=batch_seconds, max_batch_size=batch_size)
    resume = latest_checkpoint(out / "checkpoints") is not None
    run_config = {"cell": cell.key, "model": asdict(cell.model.entry), "task": asdict(cell.task.cfg),
                  "heads": to_dict(heads), "train": to_dict(train_cfg)}
    with _quiet("speechdistill.train", "speechdistill.methods"):
        result = train(method, train_cfg, heads.optim, data_cfg, out, resume=resume, run_config=run_config)
    if result.interrupted:
        raise SuiteInterrupted(cell.key)
    return json.loads(summary_file.read_text(encoding="utf-8"))


def _head_info(summary: dict, max_steps: int) -> dict:
    return {
        "steps": summary["step"], "stopped_early": bool(summary.get("stopped_early")),
        "converged": bool(summary.get("stopped_early")) or summary["step"] < max_steps,
        "dev": {k: v for k, v in summary.get("metrics", {}).items() if k.startswith("dev_")},
        "best_dev": summary.get("best"), "train_seconds": summary.get("train_seconds"),
    }


def run_asr(cell: Cell, feats: dict[str, FeatureSet], cfg: CompareConfig, cell_dir: Path) -> dict:
    task, h = cell.task, cfg.asr
    vocab = CharVocab.build([u.text for u in task.utts["train"]])
    sets = {s: FeatureDataset(feats[s], task.utts[s], pooled=False) for s in ("train", "dev", "test")}
    method = CachedCTCMethod(h.head, vocab, int(cell.seed or 0), sets["train"], sets["dev"], cell.model.entry.spec)
    summary = _train_head(method, cell, h, h.max_steps, h.val_every, h.patience, h.max_batch_seconds,
                          h.max_batch_size, cell_dir)
    fs = feats["test"]
    head = load_ctc_head(cell_dir / HEAD_DIR / "model", fs.num_states, fs.hidden_size)
    ids, refs, hyps = [], [], []
    with torch.no_grad():
        for batch in EvalFeatures(sets["test"], h.max_batch_seconds, h.max_batch_size):
            log_probs, fl = head(batch.states, batch.frame_lengths)
            hyps.extend(greedy_decode(log_probs, fl, head.vocab))
            ids.extend(batch.ids)
            refs.extend(batch.texts)
    rates = error_rates(refs, hyps)
    per = rates.per_utterance
    _write_hypotheses(cell_dir, ids, refs, hyps)
    return {
        "ids": ids,
        "metrics": {
            "wer": {"num": [e.word_errors for e in per], "den": [e.ref_words for e in per]},
            "cer": {"num": [e.char_errors for e in per], "den": [e.ref_chars for e in per]},
        },
        "head": {**_head_info(summary, h.max_steps), "layer_weights": head.layer_weight_list(),
                 "parameters": sum(p.numel() for p in head.parameters())},
    }


def _write_hypotheses(cell_dir: Path, ids, refs, hyps) -> None:
    from speechdistill.utils.io import atomic_write_text

    lines = [json.dumps({"id": i, "ref": r, "hyp": h}, ensure_ascii=False) for i, r, h in zip(ids, refs, hyps)]
    atomic_write_text(cell_dir / "hypotheses.jsonl", "".join(line + "\n" for line in lines))


def run_utterance(cell: Cell, feats: dict[str, FeatureSet], cfg: CompareConfig, cell_dir: Path) -> dict:
    task, h = cell.task, cfg.utterance
    sets = {s: FeatureDataset(feats[s], task.utts[s], pooled=True, labels=task.labels(s)) for s in ("train", "dev", "test")}
    method = UtteranceMethod(h, task.classes, int(cell.seed or 0), sets["train"], sets["dev"])
    summary = _train_head(method, cell, h, h.max_steps, h.val_every, h.patience, 1e9, h.batch_size, cell_dir)
    head, classes = load_utterance_head(cell_dir / HEAD_DIR / "model")
    ids, correct, predicted = [], [], []
    with torch.no_grad():
        for batch in EvalFeatures(sets["test"], 1e9, 512):
            pred = head(batch.states).argmax(-1)
            ids.extend(batch.ids)
            correct.extend(int(x) for x in (pred == batch.labels))
            predicted.extend(classes[int(p)] for p in pred)
    return {
        "ids": ids,
        "metrics": {"acc": {"num": correct, "den": [1] * len(correct)}},
        "predictions": predicted,
        "head": {**_head_info(summary, h.max_steps), "layer_weights": head.layer_weight_list(),
                 "parameters": sum(p.numel() for p in head.parameters()), "classes": len(classes)},
    }


def run_fidelity(cell: Cell, student: FeatureSet, teacher: FeatureSet, teacher_info: ModelInfo) -> dict:
    """Per target: cosine and L1 of the model's prediction against the teacher layer, valid frames only."""
    fmap = cell.model.fidelity
    if fmap is None or not fmap.applicable:
        return {"not_applicable": fmap.how if fmap else "no teacher"}
    if max(fmap.targets) > teacher.num_states - 1:
        return {"not_applicable": f"targets {fmap.targets} exceed the teacher's {teacher.num_states - 1} layers"}
    if student.ids != teacher.ids:
        raise RuntimeError("model and teacher features cover different utterances")
    metrics: dict[str, dict[str, list[float]]] = {"cos": {"num": [], "den": []}, "l1": {"num": [], "den": []}}
    for t in fmap.targets:
        for m in ("cos", "l1"):
            metrics[f"{m}@L{t}"] = {"num": [], "den": []}
    with torch.no_grad():
        for i in range(len(student)):
            if student.frames[i] != teacher.frames[i]:
                return {"not_applicable": f"frame counts differ from the teacher's ({student.frames[i]} vs "
                        f"{teacher.frames[i]} for {student.ids[i]}): not the same front end"}
            t_states = teacher.raw_states(i)
            preds = fmap.predictions(student.raw_states(i))
            if preds[0].shape[-1] != t_states.shape[-1]:
                return {"not_applicable": f"width {preds[0].shape[-1]} differs from the teacher's {t_states.shape[-1]}"}
            n = float(student.frames[i])
            cos_sum = l1_sum = 0.0
            for t, p in zip(fmap.targets, preds):
                c = float(F.cosine_similarity(p, t_states[t], dim=-1).sum())
                l1 = float((p - t_states[t]).abs().mean(-1).sum())
                metrics[f"cos@L{t}"]["num"].append(c)
                metrics[f"l1@L{t}"]["num"].append(l1)
                cos_sum, l1_sum = cos_sum + c, l1_sum + l1
                for m in ("cos", "l1"):
                    metrics[f"{m}@L{t}"]["den"].append(n)
            k = len(fmap.targets)
            metrics["cos"]["num"].append(cos_sum / k)
            metrics["l1"]["num"].append(l1_sum / k)
            metrics["cos"]["den"].append(n)
            metrics["l1"]["den"].append(n)
    return {"ids": list(student.ids), "metrics": metrics,
            "fidelity": {"targets": fmap.targets, "sources": fmap.sources, "how": fmap.how,
                         "teacher": teacher_info.entry.spec}}


def run_cost(cell: Cell, cfg: CompareConfig) -> dict:
    from speechdistill.evaluation.cost import measure_speed

    c = cfg.cost
    t0 = time.perf_counter()
    speed = measure_speed(cell.model.entry.spec, c.seconds, c.threads, c.repeats, c.warmup, c.isolate)
    speed["probe_seconds"] = time.perf_counter() - t0
    return {"cost": speed}


def model_info(model, spec: str, seconds: float) -> dict:
    """Parameters, MACs per second of audio (at ``seconds`` of input) and file size of one row."""
    from speechdistill.evaluation.cost import count_model_macs, file_megabytes
    from speechdistill.evaluation.encoders import num_parameters

    macs = count_model_macs(model, seconds)
    return {"params": num_parameters(model), "macs": macs, "macs_per_second": macs / seconds,
            "macs_seconds": seconds, "file_mb": file_megabytes(spec)}


def finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
