"""The accuracy-versus-cost frontier of a study: points from the comparison's records, the Pareto front
(no other point is both cheaper and better), two plots (score vs MACs, score vs CPU RTF; one colour per
trained size, one marker per compression) and markdown tables of the front and of the equal-cost
question "does a larger model, compressed, beat a smaller one trained under the same budget?"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from speechdistill.errors import BadInputError

#: compression family -> (plot marker, legend text); "none" is the uncompressed trained model.
MARKERS = {
    "none": ("o", "trained (uncompressed)"),
    "stat": ("^", "STAT"),
    "stat_cnn": ("v", "STAT + CNN"),
    "magnitude": ("s", "magnitude"),
    "int8": ("D", "ONNX int8"),
    "prune_int8": ("P", "pruned, then int8"),
    "distill": ("*", "distilled student"),
}
COSTS = {"macs": ("macs_per_second", "MACs per second of audio"), "rtf": ("rtf", "CPU real-time factor")}


@dataclass(frozen=True)
class Point:
    name: str
    size: str  # the trained size it comes from
    compression: str  # a MARKERS key
    params: float
    macs_per_second: float
    rtf: float | None
    file_mb: float | None
    score: float  # the primary metric (WER: lower is better)
    ci_low: float
    ci_high: float

    @property
    def compressed(self) -> bool:
        return self.compression != "none"


def pareto_front(points: Sequence[Point], cost: str, higher_is_better: bool = False) -> list[Point]:
    """Points that no other point beats on both cost (lower) and score, cheapest first.

    A point equal to another on both axes stays on the front with it; points without the cost (e.g.
    no RTF measured) are left out.  Raises BadInputError on a non-finite score or cost."""
    if cost not in COSTS:
        raise BadInputError(f"unknown cost {cost!r}; choose from {', '.join(COSTS)}")
    attr = COSTS[cost][0]
    usable = []
    for p in points:
        c = getattr(p, attr)
        if c is None:
            continue
        if not (math.isfinite(c) and math.isfinite(p.score)):
            raise BadInputError(f"{p.name}: non-finite {attr}={c} or score={p.score}: cannot place it on the front")
        usable.append(p)
    sign = -1.0 if higher_is_better else 1.0  # minimise sign * score

    def dominated(p: Point) -> bool:
        pc, ps = getattr(p, attr), sign * p.score
        return any(
            getattr(q, attr) <= pc and sign * q.score <= ps and (getattr(q, attr) < pc or sign * q.score < ps)
            for q in usable
        )

    return sorted((p for p in usable if not dominated(p)), key=lambda p: (getattr(p, attr), sign * p.score))


def front_owners(front: Sequence[Point], cost: str) -> list[tuple[str, float, float]]:
    """Runs of the front (cheapest first) that come from one trained size: (size, lowest cost, highest cost).
    Where the size changes is where the answer to "which size should I train?" flips."""
    attr = COSTS[cost][0]
    runs: list[tuple[str, float, float]] = []
    for p in front:
        c = getattr(p, attr)
        if runs and runs[-1][0] == p.size:
            runs[-1] = (p.size, runs[-1][1], c)
        else:
            runs.append((p.size, c, c))
    return runs


def equal_cost_answers(points: Sequence[Point], size_order: Sequence[str], differences: dict[tuple[str, str], dict],
                       tolerance: float = 0.05) -> list[dict]:
    """For every trained size S (uncompressed), the best point from a LARGER size whose MACs are at most
    S's (within ``tolerance``), with the paired difference against S when the comparison gave one
    (``differences[(row, S)]``, the compare command's ``vs_pairs``)."""
    rank = {s: i for i, s in enumerate(size_order)}
    base = {p.size: p for p in points if not p.compressed}
    out = []
    for s in size_order:
        b = base.get(s)
        if b is None:
            continue
        rivals = [p for p in points if rank.get(p.size, -1) > rank[s]
                  and p.macs_per_second <= b.macs_per_second * (1 + tolerance)]
        row: dict = {"size": s, "baseline": b.name, "baseline_wer": b.score, "baseline_macs": b.macs_per_second}
        if rivals:
            best = min(rivals, key=lambda p: p.score)
            d = differences.get((best.name, b.name), {})
            row.update(rival=best.name, rival_wer=best.score, rival_macs=best.macs_per_second,
                       diff=d.get("mean"), diff_low=d.get("ci_low"), diff_high=d.get("ci_high"),
                       verdict=d.get("verdict", "not compared"), claim_rule=d.get("claim_rule", ""))
        out.append(row)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def frontier_markdown(points: Sequence[Point], metric: str, answers: list[dict]) -> str:
    lines = []
    for cost, (attr, label) in COSTS.items():
        front = pareto_front(points, cost)
        lines += [f"### Pareto front: {metric.upper()} vs {label}", "",
                  (f"| row | trained size | compression | {metric.upper()} % [95 % CI] | MACs/s (G) | RTF | params (M) "
                  "| MB on disk |"), "|---|---|---|---|---|---|---|---|"]
        for p in front:
            lines.append(
                f"| {p.name} | {p.size} | {MARKERS[p.compression][1]} | {_pct(p.score)} [{_pct(p.ci_low)}, "
                f"{_pct(p.ci_high)}] | {p.macs_per_second / 1e9:.3f} | {'-' if p.rtf is None else f'{p.rtf:.4f}'} "
                f"| {p.params / 1e6:.2f} | {'-' if p.file_mb is None else f'{p.file_mb:.1f}'} |"
            )
        owners = front_owners(front, cost)
        scale = 1e9 if cost == "macs" else 1.0
        unit = " G" if cost == "macs" else ""
        lines += ["", "Trained size owning the front, cheapest first: " + " -> ".join(
            f"{size} ({lo / scale:.3g}-{hi / scale:.3g}{unit})" for size, lo, hi in owners), ""]
    lines += ["### Larger, compressed vs smaller, at no more MACs", "",
              ("The best row from a larger trained size whose MACs are at most the smaller size's (uncompressed); "
              "difference = rival - baseline in WER points, paired by utterance, 95 % CI."), "",
              "| size | baseline WER % | best larger rival (<= MACs) | rival WER % | difference [95 % CI] | verdict |",
              "|---|---|---|---|---|---|"]
    for a in answers:
        if "rival" not in a:
            lines.append(f"| {a['size']} | {_pct(a['baseline_wer'])} | none at these MACs | - | - | - |")
            continue
        diff = "-" if a["diff"] is None else f"{100 * a['diff']:+.1f} [{100 * a['diff_low']:+.1f}, {100 * a['diff_high']:+.1f}]"
        verdict = a["verdict"] + (f" ({a['claim_rule']})" if a.get("claim_rule") not in ("", "holds", None) else "")
        lines.append(f"| {a['size']} | {_pct(a['baseline_wer'])} | {a['rival']} | {_pct(a['rival_wer'])} | {diff} "
                     f"| {verdict} |")
    return "\n".join(lines) + "\n"


def frontier_plots(points: Sequence[Point], size_order: Sequence[str], metric: str, out: Path, title: str,
                   smoke: bool = False) -> list[Path]:
    """study_vs_macs.png and study_vs_rtf.png in ``out`` (atomic writes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from speechdistill.utils.io import atomic_write_bytes

    colours = plt.get_cmap("tab10")
    colour = {s: colours(i % 10) for i, s in enumerate(size_order)}
    written = []
    for cost, (attr, label) in COSTS.items():
        pts = [p for p in points if getattr(p, attr) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for p in pts:
            marker = MARKERS[p.compression][0]
            x = getattr(p, attr)
            ax.errorbar([x], [100 * p.score], yerr=[[100 * (p.score - p.ci_low)], [100 * (p.ci_high - p.score)]],
                        fmt=marker, color=colour[p.size], markersize=11 if not p.compressed else 8,
                        markerfacecolor=colour[p.size] if not p.compressed else "white", capsize=2, alpha=0.9)
        front = pareto_front(pts, cost)
        ax.plot([getattr(p, attr) for p in front], [100 * p.score for p in front], "k--", lw=1, zorder=0,
                label="Pareto front")
        for p in front:
            ax.annotate(p.name, (getattr(p, attr), 100 * p.score), textcoords="offset points", xytext=(5, 5),
                        fontsize=7)
        for s in size_order:
            ax.plot([], [], "o", color=colour[s], label=f"trained size {s}")
        for fam, (marker, text) in MARKERS.items():
            if any(p.compression == fam for p in pts):
                ax.plot([], [], marker, color="grey", markerfacecolor="white" if fam != "none" else "grey",
                        label=text)
        ax.set_xscale("log")
        ax.set_xlabel(label + (" (batch 1, measured)" if cost == "rtf" else " (analytic)"))
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.set_title(title + (" [SMOKE: numbers not meaningful]" if smoke else ""), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        path = out / f"study_vs_{cost}.png"
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written


def points_json(points: Sequence[Point]) -> list[dict]:
    return [{**asdict(p), "compressed": p.compressed} for p in points]
