"""The demo's report.md: its `speechdistill compare` tables and plots, with what the demo left out."""

from __future__ import annotations

import os
from pathlib import Path

from speechdistill.evaluation.report import difference_table, main_table
from speechdistill.utils.io import atomic_write_text


def write_demo_report(summary: dict, compare_doc: dict, out: Path) -> None:
    rows = summary["rows"]
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
    cfg = summary["config"]
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

| stage | seconds |
|---|---|
{stage_lines}
| total | {summary['total_seconds']:.0f} |
"""
    atomic_write_text(out / "report.md", text)


def _fmt_record(record: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in record.items())
