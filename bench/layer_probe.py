#!/usr/bin/env python
"""Layer probe: does a frozen-encoder CTC head read a regressed copy of a teacher layer worse than a free latent?

Issue 11: at demo scale GenDistiller (GD) matches or beats DistilHuBERT (DH) in layer fidelity to the
teacher's target layers, yet loses in ASR.  DH's CTC features are its own transformer layer (a free latent;
its training-only prediction heads regress teacher layers from it), GD's features are its generated layers,
which *are* regressions of teacher layers.  This script trains the same CTC head (``compare``'s ``digits``
ASR head, a BiLSTM with early stopping on dev WER) on several *views*, i.e. sets of frame-level states,
and reports test WER per view with head seeds and paired bootstrap CIs:

  teacher          the teacher's states [x0, h1, ..., hL] (what ``compare`` gives the teacher row)
  teacher-targets  the teacher's [x0, h_t for t in targets] (the distillation targets: a perfect regression)
  dh-latent        DH's states as ``compare`` sees them ([x0, h1, ...], the free latent)
  dh-predictions   [x0, ĥ_t ...] from DH's prediction heads on its last layer (``prediction_heads.safetensors``)
  gd               GD's states as ``compare`` sees them ([x0, ĥ1, ..., ĥK], its generated layers)

Every view is extracted on the same frames as ``compare`` (``evaluation.features.extract_features`` into a
cache), and every head is ``evaluation.tasks.run_asr`` (the head training, dev-WER early stopping and test
scoring of a ``compare`` ASR cell); the CIs are ``evaluation.statistics`` (two-way bootstrap over test
utterances and seeds; differences paired by utterance).  Derived views (``teacher-targets``,
``dh-predictions``) are small encoder wrappers whose ``encode`` returns the chosen or predicted states.

Writes OUT/layer_probe.json and OUT/layer_probe.md (table: view, states, test WER mean [95 % CI], best dev
WER, Δ vs dh-latent paired [CI]) and prints the table.  Resumable: a finished (view, seed) cell
(OUT/cells/VIEW/seedK/result.json with matching settings) is reused; an interrupted head continues from
its checkpoint.

Usage (threads: one per job on a shared machine):

  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/layer_probe.py --corpus CORPUS \\
      --distilhubert STUDENTS/distilhubert/model --gendistiller STUDENTS/gendistiller-k4/model --out OUT
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

VIEWS = ("teacher", "teacher-targets", "dh-latent", "dh-predictions", "gd")
REFERENCE_VIEW = "dh-latent"
#: Part of derived views' cache keys and cell hashes: bump when a wrapper's states change.
VIEW_VERSION = 1

log = logging.getLogger("bench.layer_probe")


@dataclass
class View:
    name: str
    spec: str  # the model directory or spec the states come from
    key: str  # feature-cache key (the model fingerprint; derived views add a suffix)
    states: str  # what the head sees, for the table
    load: Callable[[], object]  # the encoder (or wrapper) extract_features runs, built only on a cache miss


def _state_view(encoder, pick, num_states: int, hidden_size: int):
    """An encoder whose ``encode`` returns ``pick(encoder.encode(...))`` as its hidden states: the interface
    ``extract_features`` reads.  ``last_hidden_state`` is None, so the head sees exactly the picked states."""
    from torch import nn

    from speechdistill.models.encoder import EncoderOutput

    class StateView(nn.Module):
        normalize = getattr(encoder, "normalize", False)

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.num_output_layers = num_states - 1
            self.hidden_size = hidden_size

        def encode(self, wav, lengths=None):
            out = self.encoder.encode(wav, lengths)
            return EncoderOutput(tuple(pick(out)), out.frame_lengths, None)

    return StateView().eval()


def teacher_targets_view(spec: str, targets: list[int]):
    from speechdistill.evaluation.encoders import load_model

    teacher = load_model(spec)
    if max(targets) > teacher.num_output_layers:
        raise SystemExit(f"targets {targets} exceed the teacher's {teacher.num_output_layers} layers ({spec})")
    picks = [0, *targets]
    # Raw layer outputs: what distillation regresses (FeatureSet.raw_states), not a final-LN output.
    return _state_view(teacher, lambda out: [out.hidden_states[i] for i in picks], len(picks), teacher.hidden_size)


def dh_predictions_view(spec: str):
    """DH's encoder as ``compare`` loads it, plus its prediction heads on its last raw layer, as
    ``DistilHuBERTStudent.forward`` and ``compare``'s fidelity map apply them."""
    from speechdistill.evaluation.encoders import load_model
    from speechdistill.methods.distilhubert import load_student
    from speechdistill.models.teacher import prepare_frozen

    encoder = load_model(spec)
    heads = prepare_frozen(load_student(spec).prediction_heads)
    out_dim = heads.out[0].out_features
    if out_dim != encoder.hidden_size:
        raise SystemExit(f"{spec}: prediction heads give {out_dim}-wide states but x0 is {encoder.hidden_size} wide; "
                         "they cannot share one weighted layer sum")
    return _state_view(encoder, lambda out: [out.hidden_states[0], *heads(out.hidden_states[-1])],
                       1 + len(heads.out), out_dim)


def build_views(args, names: list[str]) -> tuple[list[View], list[int]]:
    from speechdistill.evaluation.encoders import fingerprint, load_model, model_path
    from speechdistill.utils.io import read_json

    targets = [int(t) for t in args.targets.split(",") if t]
    if not targets and args.distilhubert:
        targets = [int(t) for t in read_json(Path(args.distilhubert) / "distill_info.json")["targets"]]
    needs = {"dh-latent": args.distilhubert, "dh-predictions": args.distilhubert, "gd": args.gendistiller,
             "teacher-targets": targets}
    for n in names:
        if n in needs and not needs[n]:
            what = {"gd": "--gendistiller", "teacher-targets": "--targets or --distilhubert"}.get(n, "--distilhubert")
            raise SystemExit(f"view {n} needs {what}")
    teacher = str(model_path(args.teacher) or args.teacher)
    t_fp = fingerprint(args.teacher)
    views = {
        "teacher": lambda: View("teacher", teacher, t_fp, "x0, h1..hL", lambda: load_model(args.teacher)),
        "teacher-targets": lambda: View(
            "teacher-targets", teacher, f"{t_fp}.targets{'-'.join(map(str, targets))}.v{VIEW_VERSION}",
            "x0, " + ", ".join(f"h{t}" for t in targets), lambda: teacher_targets_view(args.teacher, targets)),
        "dh-latent": lambda: View("dh-latent", args.distilhubert, fingerprint(args.distilhubert), "x0, h1..hN (DH)",
                                  lambda: load_model(args.distilhubert)),
        "dh-predictions": lambda: View(
            "dh-predictions", args.distilhubert, f"{fingerprint(args.distilhubert)}.heads.v{VIEW_VERSION}",
            "x0, " + ", ".join(f"ĥ{t}" for t in targets) + " (DH heads)", lambda: dh_predictions_view(args.distilhubert)),
        "gd": lambda: View("gd", args.gendistiller, fingerprint(args.gendistiller), "x0, ĥ1..ĥK (GD)",
                           lambda: load_model(args.gendistiller)),
    }
    return [views[n]() for n in names], targets


def best_dev_wer(cell_dir: Path) -> float | None:
    """Dev WER at the validation the engine kept (best ``dev_wer_then_cer``), from the head's log."""
    log_file = cell_dir / "head" / "train_log.jsonl"
    if not log_file.is_file():
        return None
    rows = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if "dev_wer_then_cer" in r]
    return min(rows, key=lambda r: r["dev_wer_then_cer"])["dev_wer"] if rows else None


def run_view(view: View, task, ccfg, seeds: list[int], out: Path, cache_root: Path, manifest_hashes: dict) -> list[dict]:
    from speechdistill.evaluation.encoders import ModelEntry
    from speechdistill.evaluation.features import cached_features
    from speechdistill.evaluation.plan import Cell, ModelInfo, cell_hash
    from speechdistill.evaluation.protocol import RESULT_FILE, _claim_cell_dir, _read_result
    from speechdistill.evaluation.tasks import run_asr
    from speechdistill.utils.io import atomic_write_json

    f = ccfg.features
    loaded: dict[str, object] = {}

    def encoder():
        if "model" not in loaded:
            log.info("%s: loading %s", view.name, view.spec)
            loaded["model"] = view.load()
        return loaded["model"]

    feats = {s: cached_features(encoder, task.manifests[s], cache_root, view.key, True, f.dtype, f.max_batch_seconds,
                                f.max_batch_size, desc=f"features {view.name} {s}") for s in ("train", "dev", "test")}
    fs = feats["train"]
    info = ModelInfo(ModelEntry(view.name, view.spec), view.key, "pytorch", fs.num_states, fs.hidden_size)
    results = []
    for seed in seeds:
        cell = Cell(info, task, seed)
        cell_dir = out / "cells" / view.name / f"seed{seed}"
        h = cell_hash(cell, ccfg, manifest_hashes)
        res = _read_result(cell_dir / RESULT_FILE, h)
        if res is None:
            _claim_cell_dir(cell_dir, h)
            log.info("%s seed %d: training the CTC head on %d states x %d", view.name, seed, fs.num_states, fs.hidden_size)
            t0 = time.perf_counter()
            res = run_asr(cell, feats, ccfg, cell_dir)
            res.update({"cell_hash": h, "cell": f"{view.name}/seed{seed}", "seconds": time.perf_counter() - t0,
                        "best_dev_wer": best_dev_wer(cell_dir), "num_states": fs.num_states})
            atomic_write_json(cell_dir / RESULT_FILE, res)
            log.info("%s seed %d: %d steps%s, best dev WER %.3f (%.0f s)", view.name, seed, res["head"]["steps"],
                     " (early stop)" if res["head"]["stopped_early"] else "", res["best_dev_wer"], res["seconds"])
        else:
            log.info("%s seed %d: reusing %s", view.name, seed, cell_dir / RESULT_FILE)
        results.append(res)
    return results


def aggregate(views: list[View], cells: dict[str, list[dict]], stats) -> list[dict]:
    import numpy as np

    from speechdistill.evaluation.statistics import SeedScores, interval, paired_difference

    def scores(res: dict, metric: str) -> SeedScores:
        m = res["metrics"][metric]
        return SeedScores(res["ids"], np.asarray(m["num"], dtype=np.float64), np.asarray(m["den"], dtype=np.float64))

    ref = cells.get(REFERENCE_VIEW)
    rows = []
    for v in views:
        rs = cells[v.name]
        wer = interval([scores(r, "wer") for r in rs], stats.bootstrap, stats.confidence, stats.seed)
        cer = interval([scores(r, "cer") for r in rs], stats.bootstrap, stats.confidence, stats.seed)
        devs = [r["best_dev_wer"] for r in rs if r.get("best_dev_wer") is not None]
        row = {"view": v.name, "spec": v.spec, "states": v.states, "num_states": rs[0]["num_states"],
               "seeds": len(rs), "wer": wer.to_dict(), "cer": cer.to_dict(),
               "best_dev_wer": float(np.mean(devs)) if devs else None, "best_dev_wer_per_seed": devs,
               "heads": [{k: r["head"][k] for k in ("steps", "stopped_early", "converged")} for r in rs],
               "converged": all(r["head"]["converged"] for r in rs),
               "layer_weights": np.mean([r["head"]["layer_weights"] for r in rs], 0).tolist()}
        if ref is not None and v.name != REFERENCE_VIEW:
            d = paired_difference([scores(r, "wer") for r in rs], [scores(r, "wer") for r in ref],
                                  stats.bootstrap, stats.confidence, stats.seed)
            row[f"vs_{REFERENCE_VIEW}"] = d.to_dict()
        rows.append(row)
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(rows: list[dict], meta: dict) -> str:
    pct = _pct
    lines = [
        "# Layer probe: the same CTC head on teacher layers, regressed layers and free latents", "",
        f"Command: `{meta['command']}`  ",
        (f"Corpus: `{meta['corpus']}` ({meta['test_utterances']} test utterances, {meta['test_speakers']} test voices); "
        f"head: compare `digits` ASR head ({meta['head']}), ≤ {meta['ctc_steps']} steps, validation every "
        f"{meta['ctc_val_every']}, patience {meta['ctc_patience']}; {meta['seeds']} seed(s); {meta['threads']} thread(s); "
        f"wall {meta['wall_seconds'] / 60:.1f} min."), "",
        ("Test WER % mean over seeds [95 % CI, bootstrap over utterances and seeds]; best dev WER % = mean over seeds "
        f"of the dev WER at the kept head; Δ = view − {REFERENCE_VIEW}, paired by test utterance. "
        "† = a head reached its step budget without early stopping."), "",
        f"| view | states | test WER % | best dev WER % | Δ vs {REFERENCE_VIEW} (pts) | layer weights |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["wer"]
        d = r.get(f"vs_{REFERENCE_VIEW}")
        delta = f"{100 * d['mean']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]" if d else "—"
        dev = pct(r["best_dev_wer"]) if r["best_dev_wer"] is not None else "—"
        mark = "" if r["converged"] else " †"
        weights = " ".join(f"{x:.2f}" for x in r["layer_weights"])
        lines.append(f"| {r['view']} | {r['states']} | {pct(w['mean'])} [{pct(w['ci_low'])}, {pct(w['ci_high'])}]{mark} "
                     f"| {dev} | {delta} | {weights} |")
    lines += ["", "Per-seed test WER %: " + "; ".join(
        f"{r['view']} " + ", ".join(pct(x) for x in r["wer"]["per_seed"]) for r in rows), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus folder with train/dev/test.jsonl (transcripts; test voices unseen)")
    ap.add_argument("--out", required=True, help="output folder: layer_probe.json/.md, cells/ (finished heads), features/")
    ap.add_argument("--views", default=",".join(VIEWS),
                    help=f"comma list of views to probe, in this order (default all): {', '.join(VIEWS)}")
    ap.add_argument("--teacher", default="builtin:reference", help="teacher spec (builtin:NAME, a directory, a hub id)")
    ap.add_argument("--distilhubert", default="", help="DistilHuBERT student directory (with prediction_heads.safetensors); "
                    "needed by dh-latent and dh-predictions")
    ap.add_argument("--gendistiller", default="", help="GenDistiller student directory; needed by gd")
    ap.add_argument("--targets", default="", help="teacher layers of the teacher-targets view, comma list "
                    "(default: the DistilHuBERT student's distillation targets)")
    ap.add_argument("--seeds", type=int, default=3, help="head seeds per view (0..N-1)")
    ap.add_argument("--ctc-steps", type=int, default=400, help="most optimizer steps per CTC head (early stopping on dev WER)")
    ap.add_argument("--ctc-val-every", type=int, default=50, help="CTC head dev validation interval (steps)")
    ap.add_argument("--ctc-patience", type=int, default=3, help="validations without a better dev WER before a head stops")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (extraction and heads)")
    ap.add_argument("--features-dir", default="", help="feature cache (default OUT/features; shareable with compare's "
                    "features.cache_dir: the plain views use the same keys)")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")  # before transformers is imported: it reads its progress-bar switch then
    import shlex
    import sys

    import torch

    torch.set_num_threads(args.threads)
    from speechdistill.config import load_config
    from speechdistill.evaluation.features import manifest_hash
    from speechdistill.evaluation.plan import _check_task
    from speechdistill.evaluation.suite import TaskConfig
    from speechdistill.evaluation.tasks import SuiteInterrupted
    from speechdistill.run.compare import CompareConfig
    from speechdistill.utils.io import atomic_write_json, atomic_write_text

    names = [v for v in args.views.split(",") if v]
    unknown = [v for v in names if v not in VIEWS]
    if unknown or not names:
        ap.error(f"unknown views {unknown}; choose from {', '.join(VIEWS)}")
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    out = Path(args.out)
    cache_root = Path(args.features_dir) if args.features_dir else out / "features"
    base = load_config(CompareConfig, "digits", command="compare", validate=False)
    ccfg = replace(base, out=str(out), seeds=args.seeds, threads=args.threads,
                   asr=replace(base.asr, max_steps=args.ctc_steps, val_every=args.ctc_val_every, patience=args.ctc_patience))
    task_cfg = next(t for t in base.tasks if t.type == "asr")
    task = _check_task(TaskConfig(name=task_cfg.name, type="asr", data="corpus"), {"corpus": str(Path(args.corpus).resolve())})
    manifest_hashes = {s: manifest_hash(p) for s, p in task.manifests.items()}
    views, targets = build_views(args, names)
    command = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])

    t0 = time.perf_counter()
    cells: dict[str, list[dict]] = {}
    try:
        for v in views:
            cells[v.name] = run_view(v, task, ccfg, list(range(args.seeds)), out, cache_root, manifest_hashes)
    except SuiteInterrupted as e:
        log.warning("interrupted during %s; rerun the same command to continue", e)
        raise SystemExit(130) from None
    wall = time.perf_counter() - t0
    rows = aggregate(views, cells, ccfg.stats)
    meta = {"command": command, "corpus": str(Path(args.corpus).resolve()), "teacher": args.teacher,
            "distilhubert": args.distilhubert, "gendistiller": args.gendistiller, "targets": targets,
            "test_utterances": task.test_utterances, "test_speakers": task.test_speakers,
            "head": f"{ccfg.asr.head.head}, hidden {ccfg.asr.head.lstm_hidden}, lr {ccfg.asr.optim.lr}",
            "asr_heads": asdict(ccfg.asr), "ctc_steps": args.ctc_steps, "ctc_val_every": args.ctc_val_every,
            "ctc_patience": args.ctc_patience, "seeds": args.seeds, "threads": args.threads,
            "wall_seconds": wall, "head_seconds": sum(r["seconds"] for rs in cells.values() for r in rs)}
    table = markdown(rows, meta)
    atomic_write_json(out / "layer_probe.json", {"meta": meta, "rows": rows})
    atomic_write_text(out / "layer_probe.md", table)
    log.info("wrote %s and %s", out / "layer_probe.json", out / "layer_probe.md")
    print(table)


if __name__ == "__main__":
    main()
