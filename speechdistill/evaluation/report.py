"""compare.md: the table a person reads (compare.json holds the same numbers for programs)."""

from __future__ import annotations

from pathlib import Path

from speechdistill.utils.io import atomic_write_text

PERCENT = {"wer", "cer", "acc"}
LABEL = {"wer": "WER %", "cer": "CER %", "acc": "acc %", "cos": "cos", "l1": "L1", "rtf": "RTF"}


def _num(x: float | None, metric: str) -> str:
    if x is None:
        return "—"
    if metric in PERCENT:
        return f"{100 * x:.1f}"
    if metric == "rtf":
        return f"{x:.4f}"
    return f"{x:.3f}"


def cell_text(r: dict) -> str:
    if r["mean"] is None:
        return "n/a" + (f" ({r['note']})" if r.get("note") and len(r["note"]) < 40 else "")
    m = r["metric"]
    text = f"{_num(r['mean'], m)} [{_num(r['ci_low'], m)}, {_num(r['ci_high'], m)}]"
    if r.get("converged") is False:
        text += " †"
    return text


def main_table(doc: dict) -> str:
    records = doc["records"]
    tasks = [t for t in doc["tasks"] if t["type"] != "cost"]
    has_cost = any(t["type"] == "cost" for t in doc["tasks"])
    head = ["model", "kind", "params (M)", "GMACs / s audio"]
    if has_cost:
        rec = next((r for r in records if r.get("rtf") is not None), None)
        head += [f"RTF ({rec['rtf_threads']} thr, {rec['rtf_input_seconds']:g} s)" if rec else "RTF", "peak MB"]
    by = {(r["model"], r["task"]): r for r in records}
    for t in tasks:
        metric = next(r["metric"] for r in records if r["task"] == t["name"])
        head.append(f"{t['name']} {LABEL.get(metric, metric)}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in dict.fromkeys(r["model"] for r in records):
        r0 = next(r for r in records if r["model"] == model)
        row = [model, r0["kind"], f"{r0['params'] / 1e6:.2f}", f"{r0['macs_per_second'] / 1e9:.3f}"]
        if has_cost:
            c = next((r for r in records if r["model"] == model and r["type"] == "cost"), None)
            row.append(cell_text(c) if c and c["mean"] is not None else "—")
            row.append(f"{r0['peak_memory_mb']:.0f}" if r0.get("peak_memory_mb") else "—")
        row += [cell_text(by[(model, t["name"])]) for t in tasks]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def secondary_table(doc: dict) -> str:
    rows = [r for r in doc["records"] if r.get("secondary")]
    if not rows:
        return ""
    lines = ["| model | task | metric | mean [95 % CI] |", "|---|---|---|---|"]
    for r in rows:
        for k, v in r["secondary"].items():
            lines.append(f"| {r['model']} | {r['task']} | {LABEL.get(k, k)} | {_num(v['mean'], k)} "
                         f"[{_num(v['ci_low'], k)}, {_num(v['ci_high'], k)}] |")
    return "\n".join(lines)


def _diff_line(r: dict, d: dict, against: bool = False) -> str:
    m = r["metric"]
    k = 100 if m in PERCENT else 1
    unit, nd = (" pts", 1) if m in PERCENT else ("", 3)
    return (f"| {r['task']} | {r['model']}{' − ' + d['against'] if against else ''} | {k * d['mean']:+.{nd}f}{unit} | "
            f"[{k * d['ci_low']:+.{nd}f}, {k * d['ci_high']:+.{nd}f}] | {d['verdict']} | {d['claim_rule']} |")


def difference_table(doc: dict) -> str:
    rows = [r for r in doc["records"] if r.get("vs_reference") and r["type"] != "cost"]
    if not rows:
        return ""
    lines = [f"Differences against **{doc['reference']}** (row − reference), paired by test utterance:", "",
             "| task | model | Δ | 95 % CI | verdict | claim rule |", "|---|---|---|---|---|---|"]
    lines += [_diff_line(r, r["vs_reference"]) for r in rows]
    speed = [r for r in doc["records"] if r["type"] == "cost" and r.get("vs_reference", {}).get("speedup")]
    if speed:
        lines += ["", "CPU speed-up over the reference (its RTF / row RTF): " + ", ".join(
            f"{r['model']} {r['vs_reference']['speedup']:.2f}x" for r in speed)]
    return "\n".join(lines)


def pairs_table(doc: dict) -> str:
    rows = [(r, d) for r in doc["records"] for d in (r.get("vs_pairs") or {}).values()]
    if not rows:
        return ""
    lines = ["| task | pair | Δ | 95 % CI | verdict | claim rule |", "|---|---|---|---|---|---|"]
    lines += [_diff_line(r, d, against=True) for r, d in rows if r["type"] != "cost"]
    speed = [(r, d) for r, d in rows if r["type"] == "cost" and d.get("speedup")]
    if speed:
        lines += ["", "CPU speed-up (second row's RTF / first row's): " + ", ".join(
            f"{r['model']} vs {d['against']} {d['speedup']:.2f}x" for r, d in speed)]
    return "\n".join(lines)


def fidelity_table(doc: dict) -> str:
    rows = [r for r in doc["records"] if r.get("fidelity")]
    if not rows:
        return ""
    lines = ["| task | model | how | teacher layer: cos / L1 |", "|---|---|---|---|"]
    for r in rows:
        f = r["fidelity"]
        per = ", ".join(f"L{t}: {v['cos']:.3f} / {v['l1']:.3f}" for t, v in f["per_target"].items())
        lines.append(f"| {r['task']} | {r['model']} | {f['how']} | {per} |")
    return "\n".join(lines)


def heads_table(doc: dict) -> str:
    rows = [r for r in doc["records"] if r.get("heads")]
    if not rows:
        return ""
    lines = ["| task | model | per-seed score | steps (early stop) | head params |", "|---|---|---|---|---|"]
    for r in rows:
        m = r["metric"]
        per = ", ".join(_num(v, m) for v in r.get("per_seed", []))
        steps = ", ".join(f"{h['steps']}{'' if h['stopped_early'] else '*'}" for h in r["heads"])
        lines.append(f"| {r['task']} | {r['model']} | {per} | {steps} | {r.get('head_parameters', 0) / 1e3:.1f}k |")
    return "\n".join(lines)


def write_markdown(doc: dict, path: Path) -> None:
    tasks = "\n".join(
        f"| {t['name']} | {t['type']} | {t.get('train_utterances') or '—'} | {t['test_utterances'] or '—'} | "
        f"{t['test_speakers'] or '—'} | {t.get('classes') or '—'} | `{t['manifests'].get('test', '—')}` |"
        for t in doc["tasks"] if t["type"] != "cost")
    smoke = ("\n> **SMOKE RUN: the numbers are not meaningful** (tiny budgets or data; for plumbing only).\n"
             if doc.get("smoke") else "")
    versions = ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
    plots = "\n".join(f"![{p}]({p})" for p in doc.get("plots", []))
    notes = [r for r in doc["records"] if r.get("note")]
    note_text = "\n".join(f"- {r['model']} / {r['task']}: {r['note']}" for r in notes)
    sections = [
        f"# {doc.get('title') or 'speechdistill compare'}",
        smoke,
        (f"Command: `{doc['command']}`  \nDate: {doc['date']}; {doc['seeds']} seed(s); reference row: "
         f"**{doc['reference']}**; fidelity teacher: `{doc.get('teacher') or '—'}`."),
        "## Results",
        "Mean over seeds [95 % CI]. † = a head reached max_steps without early stopping (may not have converged).",
        main_table(doc),
    ]
    for title, body in [("## Secondary metrics", secondary_table(doc)),
                        ("## Against the reference", difference_table(doc)),
                        ("## Pairs", pairs_table(doc)),
                        ("## Layer fidelity per target", fidelity_table(doc)),
                        ("## Heads", "Steps with * hit max_steps without early stopping.\n\n" + heads_table(doc)
                         if heads_table(doc) else ""),
                        ("## Not applicable", note_text)]:
        if body:
            sections += [title, body]
    sections += [
        "## Test sets",
        ("| task | type | train utts | test utts | test speakers | classes | test manifest |\n"
         "|---|---|---|---|---|---|---|\n" + tasks),
        "## Protocol", doc["protocol"],
        "## Plots", plots or "(no scored task)",
        "## Versions", versions,
    ]
    atomic_write_text(path, "\n\n".join(s for s in sections if s is not None) + "\n")
