"""The comparison protocol over a whole suite: plan and check, run every cell once (resumable), then
aggregate cells into records with CIs and paired differences, and write compare.json/md and the plots.

Layout of OUT::

    compare.json  compare.md  score_vs_macs.png  score_vs_rtf.png  compare_config.yaml
    cells/MODEL/TASK[/seedK]/result.json   one finished cell (plus the head's engine run in head/)
    cells/MODEL/model_info.json            params, MACs, file size
    features/                              cached layer stacks (features.cache_dir)

``cells_dir`` and ``features.cache_dir`` may point elsewhere, so suites share finished cells (a cell is
found by its model, task name and seed, and reused only when its hash matches).

A cell is finished when its ``result.json`` exists with the cell's hash (model fingerprint, manifests,
task and head settings, seed): an interrupted run is rerun with the same command and only the missing
cells are computed; a head interrupted mid-training resumes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from speechdistill.evaluation.features import cached_features, manifest_hash
from speechdistill.evaluation.plan import Cell, ModelInfo, Plan, build_plan, cell_hash
from speechdistill.evaluation.statistics import SeedScores, interval, paired_difference, repeat_interval
from speechdistill.evaluation.tasks import model_info, run_asr, run_cost, run_fidelity, run_utterance
from speechdistill.utils.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from speechdistill.run.compare import CompareConfig

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
INFO_FILE = "model_info.json"
#: task type -> (primary metric, higher is better); secondary metrics shown beside it.
PRIMARY = {"asr": ("wer", False), "ks": ("acc", True), "sid": ("acc", True), "fidelity": ("cos", True),
           "cost": ("rtf", False)}
SECONDARY = {"asr": ("cer",), "fidelity": ("l1",)}
LOWER_IS_BETTER = {"wer", "cer", "l1", "rtf"}


class _Encoders:
    """One loaded encoder at a time: cells walk the models in order."""

    def __init__(self) -> None:
        self.spec: str | None = None
        self.model = None

    def get(self, spec: str):
        if spec != self.spec:
            from speechdistill.evaluation.encoders import load_model

            self.model = None
            self.model = load_model(spec)
            self.spec = spec
        return self.model


def _read_result(path: Path, expected_hash: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return res if res.get("cell_hash") == expected_hash else None


def _claim_cell_dir(cell_dir: Path, h: str) -> None:
    """A cell directory left by other settings (a changed head budget, a retrained model) is cleared, so
    its head and checkpoints are never mistaken for this cell's; the same cell's partial run is kept
    (its head resumes from the checkpoint)."""
    import shutil

    stamp = cell_dir / "cell_hash"
    if cell_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != h):
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, h)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("speechdistill", "torch", "transformers", "onnxruntime", "numpy", "jiwer", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            if pkg == "speechdistill":
                import speechdistill

                out[pkg] = speechdistill.__version__
    try:
        import subprocess

        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        if commit:
            out["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    out["cpu_threads_torch"] = str(torch.get_num_threads())
    return out


class Suite:
    """Runs a planned suite; ``on_cell`` (tests) is called after every newly computed cell."""

    def __init__(self, cfg: CompareConfig, plan: Plan, on_cell: Callable[[Cell], None] | None = None):
        self.cfg, self.plan, self.on_cell = cfg, plan, on_cell
        self.out = Path(cfg.out)
        self.cache_root = Path(cfg.features.cache_dir) if cfg.features.cache_dir else self.out / "features"
        self.cells = Path(cfg.cells_dir) if cfg.cells_dir else self.out / "cells"
        self.encoders = _Encoders()
        self.manifest_hashes = {t.name: {s: manifest_hash(p) for s, p in t.manifests.items()} for t in plan.tasks}
        self.reused = 0
        self.computed = 0

    def features(self, m: ModelInfo, manifest: str, frames: bool):
        f = self.cfg.features
        return cached_features(lambda: self.encoders.get(m.entry.spec), manifest, self.cache_root, m.fingerprint,
                               frames, f.dtype, f.max_batch_seconds, f.max_batch_size, desc=f"features {m.name}")

    def model_info(self, m: ModelInfo) -> dict:
        path = self.cells / m.name / INFO_FILE
        key = f"{m.fingerprint}-{self.cfg.cost.seconds}"
        if path.is_file():
            info = json.loads(path.read_text(encoding="utf-8"))
            if info.get("key") == key:
                return info
        info = {"key": key, "kind": m.kind, **model_info(self.encoders.get(m.entry.spec), m.entry.spec,
                                                         self.cfg.cost.seconds)}
        atomic_write_json(path, info)
        return info

    def run_cell(self, cell: Cell, cell_dir: Path) -> dict:
        t, m = cell.task, cell.model
        if t.type == "asr":
            feats = {s: self.features(m, t.manifests[s], True) for s in ("train", "dev", "test")}
            return run_asr(cell, feats, self.cfg, cell_dir)
        if t.type in ("ks", "sid"):
            feats = {s: self.features(m, t.manifests[s], False) for s in ("train", "dev", "test")}
            return run_utterance(cell, feats, self.cfg, cell_dir)
        if t.type == "fidelity":
            if m.fidelity is None or not m.fidelity.applicable:
                return {"not_applicable": m.fidelity.how if m.fidelity else "no teacher"}
            teacher = self.features(self.plan.teacher, t.manifests["test"], True)
            return run_fidelity(cell, self.features(m, t.manifests["test"], True), teacher, self.plan.teacher)
        return run_cost(cell, self.cfg)

    def run(self) -> tuple[dict[str, dict], dict[str, dict]]:
        cells = self.plan.cells()
        results: dict[str, dict] = {}
        infos: dict[str, dict] = {}
        teacher_fp = self.plan.teacher.fingerprint if self.plan.teacher else ""
        bar = tqdm(total=len(cells) + len(self.plan.models), desc="compare", unit="cell", dynamic_ncols=True)
        try:
            for m in self.plan.models:
                bar.set_postfix_str(f"{m.name}: params, MACs")
                infos[m.name] = self.model_info(m)
                bar.update(1)
                for cell in (c for c in cells if c.model is m):
                    bar.set_postfix_str(cell.key)
                    cell_dir = self.cells / cell.key
                    h = cell_hash(cell, self.cfg, self.manifest_hashes[cell.task.name], teacher_fp)
                    res = _read_result(cell_dir / RESULT_FILE, h)
                    if res is None:
                        _claim_cell_dir(cell_dir, h)
                        t0 = time.perf_counter()
                        res = self.run_cell(cell, cell_dir)
                        res.update({"cell_hash": h, "cell": cell.key, "seconds": time.perf_counter() - t0})
                        atomic_write_json(cell_dir / RESULT_FILE, res)
                        self.computed += 1
                        if self.on_cell is not None:
                            self.on_cell(cell)
                    else:
                        self.reused += 1
                    results[cell.key] = res
                    bar.update(1)
        finally:
            bar.close()
        return results, infos


# ---------------------------------------------------------------------------------------------
# Aggregation


def _scores(res: dict, metric: str) -> SeedScores:
    m = res["metrics"][metric]
    return SeedScores(res["ids"], np.asarray(m["num"], dtype=np.float64), np.asarray(m["den"], dtype=np.float64))


def _claim_rule(task_type: str, seeds: int, converged: bool, plan_task, stats) -> str:
    """Why a difference must not be called a win (empty when the rule holds)."""
    why = []
    if task_type in ("asr", "ks", "sid"):
        if seeds < stats.min_seeds:
            why.append(f"{seeds} seed(s) < {stats.min_seeds}")
        if not converged:
            why.append("a head stopped at max_steps before converging")
    if task_type == "asr":
        if plan_task.test_utterances < stats.min_test_utterances:
            why.append(f"{plan_task.test_utterances} test utterances < {stats.min_test_utterances}")
        if plan_task.test_speakers < stats.min_test_speakers:
            why.append(f"{plan_task.test_speakers} test speakers < {stats.min_test_speakers}")
    return "; ".join(why)


def aggregate(cfg: CompareConfig, plan: Plan, results: dict[str, dict], infos: dict[str, dict]) -> list[dict]:
    st = cfg.stats
    cost_task = next((t for t in plan.tasks if t.type == "cost"), None)
    records = []
    for m in plan.models:
        info = infos[m.name]
        cost = (results.get(f"{m.name}/{cost_task.name}") or {}).get("cost") if cost_task else None
        base = {
            "model": m.name, "spec": m.entry.spec, "kind": m.kind, "params": info["params"],
            "macs_per_second": info["macs_per_second"], "file_mb": info.get("file_mb"),
            "rtf": cost["rtf"] if cost else None, "rtf_threads": cost["threads"] if cost else None,
            "rtf_input_seconds": cost["seconds"] if cost else None,
            "peak_memory_mb": cost.get("peak_mb") if cost else None,
            "model_memory_mb": cost.get("peak_over_baseline_mb") if cost else None,
        }
        for t in plan.tasks:
            metric, hib = PRIMARY[t.type]
            rec: dict[str, Any] = {**base, "task": t.name, "type": t.type, "metric": metric, "higher_is_better": hib,
                                   "mean": None, "ci_low": None, "ci_high": None, "seeds": 0,
                                   "test_utterances": t.test_utterances if t.type != "cost" else None,
                                   "test_speakers": t.test_speakers if t.type != "cost" else None}
            if t.type == "cost":
                if cost:
                    iv = repeat_interval(cost["rtf_runs"], st.bootstrap, st.confidence, st.seed)
                    rec.update(mean=iv.mean, ci_low=iv.low, ci_high=iv.high, seeds=1, per_seed=iv.per_seed)
                records.append(rec)
                continue
            keys = [f"{m.name}/{t.name}" + (f"/seed{s}" if t.type in ("asr", "ks", "sid") else "")
                    for s in (plan.seeds if t.type in ("asr", "ks", "sid") else [None])]
            cell_res = [results[k] for k in keys if k in results]
            if not cell_res or "not_applicable" in cell_res[0]:
                rec["note"] = cell_res[0]["not_applicable"] if cell_res else "not run"
                records.append(rec)
                continue
            iv = interval([_scores(r, metric) for r in cell_res], st.bootstrap, st.confidence, st.seed)
            rec.update(mean=iv.mean, ci_low=iv.low, ci_high=iv.high, seeds=len(cell_res), per_seed=iv.per_seed)
            rec["secondary"] = {}
            for sec in SECONDARY.get(t.type, ()):
                s_iv = interval([_scores(r, sec) for r in cell_res], st.bootstrap, st.confidence, st.seed)
                rec["secondary"][sec] = {"mean": s_iv.mean, "ci_low": s_iv.low, "ci_high": s_iv.high}
            if t.type == "fidelity":
                fid = cell_res[0]["fidelity"]
                rec["fidelity"] = {**fid, "per_target": {
                    str(tl): {"cos": _scores(cell_res[0], f"cos@L{tl}").value, "l1": _scores(cell_res[0], f"l1@L{tl}").value}
                    for tl in fid["targets"]}}
            else:
                heads = [{"seed": s, **{k: r["head"][k] for k in ("steps", "stopped_early", "converged", "best_dev")}}
                         for s, r in zip(plan.seeds, cell_res)]
                rec["heads"] = heads
                rec["converged"] = all(h["converged"] for h in heads)
                rec["head_parameters"] = cell_res[0]["head"]["parameters"]
                rec["layer_weights"] = np.mean([r["head"]["layer_weights"] for r in cell_res], 0).tolist()
            rec["_cells"] = cell_res
            records.append(rec)
    _differences(cfg, plan, records)
    for r in records:
        r.pop("_cells", None)
    return records


def _difference(cfg: CompareConfig, plan: Plan, r: dict, base: dict) -> dict:
    """``r - base`` for one task: paired CI, verdict and why a win may not be claimed."""
    st = cfg.stats
    if r["type"] == "cost":
        return {"against": base["model"], "speedup": base["mean"] / r["mean"] if r["mean"] else None}
    metric = r["metric"]
    d = paired_difference([_scores(c, metric) for c in r["_cells"]], [_scores(c, metric) for c in base["_cells"]],
                          st.bootstrap, st.confidence, st.seed)
    converged = r.get("converged", True) and base.get("converged", True)
    task = next(t for t in plan.tasks if t.name == r["task"])
    rule = _claim_rule(r["type"], min(r["seeds"], base["seeds"]), converged, task, st)
    if not d.excludes_zero() or rule:
        verdict = "within noise"
    else:
        verdict = "better" if (d.mean > 0) == r["higher_is_better"] else "worse"
    return {"against": base["model"], **d.to_dict(), "verdict": verdict, "claim_rule": rule or "holds"}


def _differences(cfg: CompareConfig, plan: Plan, records: list[dict]) -> None:
    """Every row against the reference row (``vs_reference``) and the configured pairs (``vs_pairs``)."""
    by = {(r["model"], r["task"]): r for r in records}
    pairs = plan.pairs
    for r in records:
        if r["mean"] is None:
            continue
        bases = [(plan.reference, "vs_reference")] + [(b, None) for a, b in pairs if a == r["model"]]
        for base_name, key in bases:
            base = by.get((base_name, r["task"]))
            if base_name == r["model"] or base is None or base["mean"] is None:
                continue
            d = _difference(cfg, plan, r, base)
            if key:
                r[key] = {"reference": base_name, **d}
            else:
                r.setdefault("vs_pairs", {})[base_name] = d


# ---------------------------------------------------------------------------------------------
# The whole run


def run_suite(cfg: CompareConfig, command: str | None = None, on_cell: Callable[[Cell], None] | None = None) -> dict:
    """Plan (all checks first), run, aggregate, write OUT/compare.json, compare.md and the plots."""
    import yaml

    from speechdistill.config import to_dict
    from speechdistill.evaluation.plots import pareto_plots
    from speechdistill.evaluation.report import write_markdown

    out = Path(cfg.out)
    plan = build_plan(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare_config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    suite = Suite(cfg, plan, on_cell)
    try:
        results, infos = suite.run()
    finally:
        torch.set_num_threads(old_threads)
    if suite.reused:
        log.info("reused %d finished cell(s) from %s", suite.reused, suite.cells)
    records = aggregate(cfg, plan, results, infos)
    doc = {
        "title": cfg.title, "smoke": cfg.smoke, "command": command or shlex.join(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
        "reference": plan.reference, "teacher": plan.teacher.entry.spec if plan.teacher else None,
        "seeds": len(plan.seeds), "cells_computed": suite.computed, "cells_reused": suite.reused,
        "seconds": time.perf_counter() - t0,
        "tasks": [{"name": t.name, "type": t.type, "manifests": t.manifests, "test_utterances": t.test_utterances,
                   "test_speakers": t.test_speakers, "train_utterances": len(t.utts.get("train", [])),
                   "classes": len(t.classes) or None} for t in plan.tasks],
        "protocol": protocol_text(cfg),
        "config": to_dict(cfg),
        "records": records,
    }
    atomic_write_json(out / "compare.json", _finite(doc))
    plots = pareto_plots(doc, out)
    doc["plots"] = [p.name for p in plots]
    write_markdown(doc, out / "compare.md")
    atomic_write_json(out / "compare.json", _finite(doc))
    log.info("wrote %s, %s and %d plot(s)", out / "compare.json", out / "compare.md", len(plots))
    return doc


def protocol_text(cfg: CompareConfig) -> str:
    a, u, c, s = cfg.asr, cfg.utterance, cfg.cost, cfg.stats
    asr_head = (f"BiLSTM head ({a.head.lstm_layers} x {a.head.lstm_hidden} units per direction)"
                if a.head.head == "bilstm" else "linear head")
    return (
        f"Frozen encoders; every head weighs all hidden states with learnable softmax weights and has the same "
        f"budget for every encoder. ASR: {asr_head}, "
        f"character CTC, greedy decoding, lr {a.optim.lr:g}, at most {a.max_steps} steps, early stopping after "
        f"{a.patience} dev validations (every {a.val_every} steps) without a better dev WER; the best head by dev "
        f"WER is scored. KS/SID: mean-pooled states, MLP {u.hidden or 'none'}, lr {u.optim.lr:g}, at most "
        f"{u.max_steps} steps, patience {u.patience} x {u.val_every} steps on dev accuracy. "
        f"{cfg.seeds} seed(s) per cell (head init and batch order). Mean over seeds; {s.confidence:.0%} CI = "
        f"bootstrap ({s.bootstrap} resamples) over test utterances and seeds; differences against the reference "
        f"row are paired by utterance. A difference is called better/worse only when its CI excludes 0, with "
        f">= {s.min_seeds} seeds and converged heads, and for ASR >= {s.min_test_utterances} test utterances "
        f"from >= {s.min_test_speakers} speakers; otherwise 'within noise'. Layer fidelity: cosine and L1 of "
        f"each target prediction to the teacher layer on valid frames (no training). Cost: MACs per second of "
        f"audio counted on {c.seconds:g} s of input (attention scores included); RTF = median of {c.repeats} "
        f"timed forwards (batch 1, {c.seconds:g} s, {c.threads} thread(s), after {c.warmup} warm-up), peak "
        f"memory = peak resident memory of a fresh process running the model."
    )


def _finite(obj: Any) -> Any:
    """JSON has no NaN: None instead."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
