"""Markdown report and WER-vs-parameters plot for the demo (and bench/quality.py)."""

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


def plot_wer_vs_params(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in rows:
        x, y = r["encoder_params"] / 1e6, r["wer"] * 100
        ax.scatter([x], [y], s=60)
        ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("encoder parameters (M)")
    ax.set_ylabel("test WER (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_demo_report(summary: dict, out: Path) -> None:
    rows = summary["rows"]
    plot_wer_vs_params(rows, out / "wer_vs_params.png", "speechdistill demo: WER vs size (held-out speakers)")
    teacher = next(r for r in rows if r["model"] == "teacher")
    verdict = (
        f"The teacher's test WER ({teacher['wer']:.3f}) is clearly better than chance (empty output scores 1.0; "
        f"rule: {summary['meaningful_rule']}), so the comparison is meaningful."
        if summary["meaningful"] else
        f"**The numbers are not meaningful**: the teacher's test WER ({teacher['wer']:.3f}) is not clearly better "
        f"than chance (rule: {summary['meaningful_rule']}). Run longer (e.g. `--hours 1 --distill-steps 1000 "
        f"--ctc-steps 1000`) or on a GPU."
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
    cfg = summary["config"]
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

| student | encoder params | prediction heads (training only) | initialisation | training |
|---|---|---|---|---|
{student_lines}

{ratio}

MACs are counted by torch's FlopCounterMode on one forward pass of 1 s of audio. RTF = processing
time / audio time on this machine's CPU (batch 1).

![WER vs parameters](wer_vs_params.png)

| stage | seconds |
|---|---|
{stage_lines}
| total | {summary['total_seconds']:.0f} |
"""
    atomic_write_text(out / "report.md", text)


def _fmt_record(record: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in record.items())
