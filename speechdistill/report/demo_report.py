"""The demo's report.md: its `speechdistill compare` tables and plots, with what the demo left out."""

from __future__ import annotations

import os
from pathlib import Path

from speechdistill.evaluation.report import difference_table, main_table
from speechdistill.utils.io import atomic_write_text

PLOT_FILE = "wer_vs_cost.png"
# (x key, axis label, scale to the unit shown)
COST_AXES = (
    ("encoder_params", "encoder parameters (M)", 1e-6),
    ("macs_per_second", "encoder GMACs per second of audio", 1e-9),
    ("rtf", "real-time factor (CPU, batch 1)", 1.0),
)
MARKERS = "osD^vP*X"


def _spread_labels(ys: list[float], min_gap: float) -> list[float]:
    """Label heights (axes fraction) in the points' order, pushed apart to at least ``min_gap`` and kept
    inside the axes, so labels of points at similar heights do not overlap."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [0.0] * len(ys)
    prev = -1.0
    for i in order:
        placed[i] = max(ys[i], prev + min_gap)
        prev = placed[i]
    overflow = prev - 0.97
    if overflow > 0:  # shift the stack down, but not below the bottom
        placed = [max(0.03, y - overflow) for y in placed]
    return placed


def plot_wer_vs_cost(rows: list[dict], path: Path, title: str, note: str = "") -> None:
    """WER against parameters, MACs and RTF, one panel each; every point labelled (labels spread so they do
    not overlap) and in the legend; axes from 0 with units; ``note`` (e.g. a smoke-run warning) in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(COST_AXES), figsize=(5.0 * len(COST_AXES), 4.6), dpi=120, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    y_max = max(100 * r["wer"] for r in rows)
    top = max(5.0, y_max * 1.2)
    for ax, (key, label, scale) in zip(axes, COST_AXES):
        xs = [r[key] * scale for r in rows]
        ys = [100 * r["wer"] for r in rows]
        # Points use the left 60 % of the panel; labels sit in a column to their right, joined by leader lines,
        # so no label covers a point and labels are spread vertically so none covers another.
        x_max = max(xs) / 0.52 if max(xs) > 0 else 1.0
        ax.set_xlim(0, x_max)
        ax.set_ylim(0, top)
        for i, r in enumerate(rows):
            ax.scatter([xs[i]], [ys[i]], s=70, marker=MARKERS[i % len(MARKERS)], color=colors[i % len(colors)],
                       label=r["model"], zorder=3)
        label_y = _spread_labels([y / top for y in ys], min_gap=0.075)
        for i, r in enumerate(rows):
            ax.annotate(f"{r['model']}: {ys[i]:.1f} %", xy=(xs[i], ys[i]), xycoords="data",
                        xytext=(0.58, label_y[i]), textcoords="axes fraction",
                        fontsize=7.5, va="center", color=colors[i % len(colors)],
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})
        ax.set_xlabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test WER (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(rows), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    if note:
        fig.text(0.5, 0.905, note, ha="center", va="top", color="#b00020", fontsize=9, fontweight="bold")
    fig.tight_layout(rect=(0, 0.07, 1, 0.89 if note else 0.95))
    fig.savefig(path)
    plt.close(fig)


def write_demo_report(summary: dict, compare_doc: dict, out: Path) -> None:
    rows = summary["rows"]
    cfg = summary["config"]
    note = ""
    if cfg.get("quick"):
        note = "SMOKE RUN (quick mode): these numbers are not meaningful"
    elif not summary["meaningful"]:
        note = "teacher not clearly better than chance: these numbers are not meaningful"
    if all(r.get(k) is not None for r in rows for k in ("wer", "encoder_params", "macs_per_second", "rtf")):
        plot_wer_vs_cost(rows, out / PLOT_FILE, "speechdistill demo: WER vs cost, held-out speakers", note)
    teacher = next(r for r in rows if r["model"] == "teacher")
    wer = teacher["wer"]
    verdict = (
        f"The teacher's test WER ({wer:.3f}) is clearly better than chance (empty output scores 1.0; "
        f"rule: {summary['meaningful_rule']}), so the comparison is meaningful."
        if summary["meaningful"] else
        f"**The numbers are not meaningful**: the teacher's test WER ({wer if wer is None else f'{wer:.3f}'}) is not "
        f"clearly better than chance (rule: {summary['meaningful_rule']}). Run longer (e.g. `--hours 1 "
        f"--distill-steps 1000 --ctc-steps 1000`) or on a GPU."
    )
    students = summary.get("students", {})
    student_lines = "\n".join(
        f"| {name} | {st['parameters']['encoder']:,} | {st['parameters']['heads']:,} | "
        f"{_fmt_record(st.get('initialisation', {}))} | {_fmt_record(st.get('training', {})) or '-'} |"
        for name, st in students.items()
    )
    ratio = (
        f"GenDistiller has **{summary['param_ratio'] * 100:.1f} %** of DistilHuBERT's encoder parameters "
        f"({summary['param_ratio_with_heads'] * 100:.1f} % counting DistilHuBERT's training-only prediction heads)."
        if "param_ratio" in summary else ""
    )
    seeds = compare_doc["seeds"]
    stage_lines = "\n".join(f"| {k} | {v:.0f} |" for k, v in summary["stage_seconds"].items())
    n, spk = teacher["num_utterances"], teacher["test_speakers"]
    cmp_dir = Path(summary["compare"]).parent
    rel = os.path.relpath(cmp_dir, out)
    plots = "\n".join(f"![{p}]({rel}/{p})" for p in compare_doc.get("plots", []))
    text = f"""# speechdistill demo report

Corpus: synthetic connected digits (espeak-ng voices), {cfg['hours']} h of training and dev speech;
test set: {n} utterances from {spk} voices never heard in training.
Teacher: `{summary['teacher']}`. Students distilled for {cfg['distill_steps']} steps.
{"**Quick mode: a smoke run, numbers are not meaningful.**" if cfg["quick"] else ""}

Evaluation by `speechdistill compare` (frozen encoders, learnable weighted sum of their layers, the same
{cfg['ctc_head']} CTC head on each, early stopping on dev WER, at most {cfg['ctc_steps']} steps). To fit the
demo's 15-minute budget it runs **{seeds} seed(s)** and the tasks ASR, layer fidelity and cost only; the full
protocol is 3 seeds plus keyword spotting and speaker identification on real speech
(`speechdistill compare mini_superb ...`, see bench/RESULTS.md). With fewer than 3 seeds no difference is
claimed: the table below calls every difference "within noise". Full tables: `{rel}/compare.md`.

{main_table(compare_doc)}

{difference_table(compare_doc)}

{verdict}

| student | encoder params | prediction heads (training only) | initialisation | training |
|---|---|---|---|---|
{student_lines}

{ratio}

{plots}

![WER vs parameters, MACs and RTF](wer_vs_cost.png)

| stage | seconds |
|---|---|
{stage_lines}
| total | {summary['total_seconds']:.0f} |
"""
    atomic_write_text(out / "report.md", text)


def _fmt_record(record: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in record.items())
