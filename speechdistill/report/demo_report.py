"""Markdown report and the WER-vs-cost plot (parameters, MACs, RTF) for the demo (and bench/quality.py)."""

from __future__ import annotations

from pathlib import Path

from speechdistill.utils.io import atomic_write_text


def markdown_table(rows: list[dict]) -> str:
    head = "| model | how | encoder params (M) | GMACs / s audio | WER | CER | RTF (threads) |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['how']} | {r['encoder_params'] / 1e6:.2f} | {r['macs_per_second'] / 1e9:.3f} | "
            f"{r['wer']:.3f} | {r['cer']:.3f} | {r['rtf']:.4f} ({r['threads']}) |"
        )
    return "\n".join(lines)


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


def write_demo_report(summary: dict, out: Path) -> None:
    rows = summary["rows"]
    cfg = summary["config"]
    note = ""
    if cfg.get("quick"):
        note = "SMOKE RUN (quick mode): these numbers are not meaningful"
    elif not summary["meaningful"]:
        note = "teacher not clearly better than chance: these numbers are not meaningful"
    plot_wer_vs_cost(rows, out / PLOT_FILE, "speechdistill demo: WER vs cost, held-out speakers", note)
    teacher = next(r for r in rows if r["model"] == "teacher")
    verdict = (
        f"The teacher's test WER ({teacher['wer']:.3f}) is clearly better than chance (empty output scores 1.0; "
        f"rule: {summary['meaningful_rule']}), so the comparison is meaningful."
        if summary["meaningful"] else
        f"**The numbers are not meaningful**: the teacher's test WER ({teacher['wer']:.3f}) is not clearly better "
        f"than chance (rule: {summary['meaningful_rule']}). Run longer (e.g. `--hours 1 --distill-steps 1000 "
        f"--ctc-steps 1000`) or on a GPU."
    )
    stage_lines = "\n".join(f"| {k} | {v:.0f} |" for k, v in summary["stage_seconds"].items())
    n = rows[0]["num_utterances"]
    hours = rows[0]["audio_hours"]
    text = f"""# speechdistill demo report

Corpus: synthetic connected digits (espeak-ng voices), {cfg['hours']} h, speaker-disjoint train/dev/test;
test set: {n} utterances, {hours * 60:.1f} min, speakers never seen in training.
Teacher: `{summary['teacher']}`. Students distilled for {cfg['distill_steps']} steps; CTC heads
({cfg['ctc_head']}) trained for {cfg['ctc_steps']} steps on each frozen encoder. Greedy CTC decoding.
{"Quick mode: a smoke run, numbers are not meaningful." if cfg["quick"] else ""}

{markdown_table(rows)}

{verdict}

MACs are counted by torch's FlopCounterMode on one forward pass of 1 s of audio. RTF = processing
time / audio time on this machine's CPU (batch 1).

![WER vs parameters, MACs and RTF](wer_vs_cost.png)

| stage | seconds |
|---|---|
{stage_lines}
| total | {summary['total_seconds']:.0f} |
"""
    atomic_write_text(out / "report.md", text)
