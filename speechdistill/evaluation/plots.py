"""Pareto plots: each task's score against cost (MACs per second of audio, CPU RTF), one panel per task,
every model a labelled point with its CI as an error bar, the cost/quality front drawn through the
models no other model beats on both axes."""

from __future__ import annotations

import math
from pathlib import Path

METRIC_LABEL = {"wer": "WER (%)", "cer": "CER (%)", "acc": "accuracy (%)", "cos": "cosine to teacher layers",
                "l1": "L1 to teacher layers"}
PERCENT = {"wer", "cer", "acc"}


def _front(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """Points not beaten on both cost (lower) and score, in order of cost."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        s = y if higher_is_better else -y
        if s > best:
            front.append((x, y))
            best = s
    return front


def _plot_key(doc: dict) -> str:
    import hashlib
    import json

    keep = ("model", "task", "type", "metric", "higher_is_better", "mean", "ci_low", "ci_high", "macs_per_second",
            "rtf", "rtf_threads", "rtf_input_seconds")
    data = {"records": [{k: r.get(k) for k in keep} for r in doc["records"]], "tasks": doc["tasks"],
            "title": doc.get("title"), "smoke": doc.get("smoke"), "seeds": doc["seeds"]}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def pareto_plots(doc: dict, out: Path) -> list[Path]:
    """Write the plots (skipped when the same numbers were plotted before: a rerun that reuses every
    cell does not redraw them)."""
    from speechdistill.utils.io import atomic_write_text

    key_file = out / ".plots.key"
    key = _plot_key(doc)
    names = [n for n in ("score_vs_macs.png", "score_vs_rtf.png") if (out / n).is_file()]
    if names and key_file.is_file() and key_file.read_text() == key:
        return [out / n for n in names]
    written = _draw(doc, out)
    atomic_write_text(key_file, key)
    return written


def _draw(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = doc["records"]
    tasks = [t for t in doc["tasks"] if t["type"] != "cost"]
    if not tasks:
        return []
    models = list(dict.fromkeys(r["model"] for r in records))
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    markers = {m: "osD^vP*Xhp"[i % 10] for i, m in enumerate(models)}
    rtf_rec = next((r for r in records if r.get("rtf") is not None), None)
    top = max((r["macs_per_second"] for r in records), default=1.0)
    unit, scale = ("GMACs", 1e-9) if top >= 1e9 else ("MMACs", 1e-6)
    axes_def = [("macs_per_second", scale, "score_vs_macs.png", f"{unit} per second of audio (counted)")]
    if rtf_rec:
        rtf_label = (f"CPU real-time factor (batch 1, {rtf_rec['rtf_input_seconds']:g} s input, "
                     f"{rtf_rec['rtf_threads']} thread(s)); lower = faster")
        axes_def.append(("rtf", 1.0, "score_vs_rtf.png", rtf_label))
    written = []
    for key, scale, fname, xlabel in axes_def:
        ncols = min(3, len(tasks))
        nrows = math.ceil(len(tasks) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows + 0.9), dpi=100, squeeze=False)
        handles = {}
        for ax, task in zip(axes.flat, tasks):
            rows = [r for r in records if r["task"] == task["name"] and r["mean"] is not None and r.get(key) is not None]
            if not rows:
                ax.set_axis_off()
                continue
            metric, hib = rows[0]["metric"], rows[0]["higher_is_better"]
            k = 100.0 if metric in PERCENT else 1.0
            pts = []
            for r in rows:
                x, y = r[key] * scale, r["mean"] * k
                lo, hi = (r["ci_low"] or r["mean"]) * k, (r["ci_high"] or r["mean"]) * k
                h = ax.errorbar([x], [y], yerr=[[max(y - lo, 0)], [max(hi - y, 0)]], fmt=markers[r["model"]],
                                color=colors[r["model"]], capsize=3, markersize=7, label=r["model"])
                handles[r["model"]] = h
                ax.annotate(r["model"], (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8)
                pts.append((x, y))
            front = _front(pts, hib)
            if len(front) > 1:
                ax.plot(*zip(*front), ls="--", color="0.55", lw=1, zorder=0)
            xs = [p[0] for p in pts]
            if min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(f"{METRIC_LABEL.get(metric, metric)} ({'higher' if hib else 'lower'} is better)", fontsize=8)
            n = task.get("test_utterances")
            ax.set_title(f"{task['name']} ({task['type']}{f', {n} test utts' if n else ''})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.margins(x=0.15, y=0.12)
        for ax in list(axes.flat)[len(tasks):]:
            ax.set_axis_off()
        title = doc.get("title") or "speechdistill compare"
        sub = f"{doc['seeds']} seed(s), error bars = 95 % CI; dashed = cost/quality front"
        fig.suptitle(f"{title}\n{sub}", fontsize=10)
        if doc.get("smoke"):
            fig.text(0.5, 0.5, "SMOKE RUN: numbers are not meaningful", ha="center", va="center", fontsize=20,
                     color="red", alpha=0.35, rotation=20)
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(6, len(handles)),
                   fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.05, 1, 0.95))
        path = out / fname
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
