#!/usr/bin/env python
"""Curriculum extraction vs one-shot distillation at equal training FLOPs (demo scale, CPU).

For each seed: (1) one-shot DistilHuBERT distillation of the shipped reference teacher for --steps,
counting every step's FLOPs (teacher forward + student forward/backward, torch FlopCounterMode);
(2) the same student with a curriculum of projection stages (--stages) first, then the same objective,
with the final stage made just long enough that the run's total FLOPs match the one-shot run's
(per-step FLOPs of each stage measured on training batches first). Both validate on the dev set every
--val-every steps, logging the running FLOP count with the dev loss.

Writes OUT/curriculum.json, OUT/curriculum.md and OUT/dev_loss_vs_flops.png, and answers the paper's
claim: the FLOPs the curriculum needs to reach the one-shot run's final dev loss, as a fraction of the
one-shot run's FLOPs (< 1: the claim holds here), with the spread over seeds.

  python bench/curriculum.py --corpus /data/digits1h --out bench/out/curriculum --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from dataclasses import replace
from pathlib import Path

log = logging.getLogger("bench.curriculum")


def parse_stages(text: str) -> list[dict]:
    """"1:1:60,1:2:60" -> [{student_layer: 1, teacher_layer: 1, steps: 60}, ...]."""
    out = []
    for item in text.split(","):
        s, t, n = (int(x) for x in item.split(":"))
        out.append({"student_layer": s, "teacher_layer": t, "steps": n})
    return out


def base_config(args, corpus: Path, seed: int, out: Path):
    from speechdistill.config import load_config
    from speechdistill.run.distill import DistillConfig

    cfg = load_config(DistillConfig, "curriculum_demo", command="distill", validate=False)
    return replace(
        cfg, out_dir=str(out), teacher=args.teacher,
        data=replace(cfg.data, train_manifest=str(corpus / "train.jsonl"), dev_manifest=str(corpus / "dev.jsonl"),
                     max_dev_batches=args.dev_batches),
        train=replace(cfg.train, steps=args.steps, seed=seed, val_every=args.val_every, save_every=0, log_every=10,
                      count_flops=True, progress=False),
    )


def stage_flops_per_step(cfg, batches: int = 16) -> list[float]:
    """Mean FLOPs of one training step (forward + backward) in each stage, on the first training batches."""
    import torch

    from speechdistill.data.dataset import build_train_loader
    from speechdistill.run.distill import build_method
    from speechdistill.train.flops import flop_counter

    method = build_method(cfg)
    method.setup(torch.device("cpu"))
    model = method.build_model().train()
    loader, _, _ = build_train_loader(cfg.data, seed=cfg.train.seed)
    sample = [b for _, b in zip(range(batches), loader)]
    starts = [0, *method.boundaries]
    per_stage = []
    for start in starts:
        total = 0.0
        for batch in sample:
            with flop_counter() as fc:
                loss, _ = method.compute_loss(model, batch, start)
                loss.backward()
            model.zero_grad(set_to_none=True)
            total += fc.get_total_flops()
        per_stage.append(total / len(sample))
    return per_stage


def dev_curve(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "dev"]


def flops_to_reach(curve: list[dict], loss: float) -> float | None:
    """First FLOP count at which the dev loss reaches ``loss`` (linear between validations)."""
    prev = None
    for r in curve:
        if r["dev_loss"] <= loss:
            if prev is None or prev["dev_loss"] == r["dev_loss"]:
                return r["flops"]
            f = (prev["dev_loss"] - loss) / (prev["dev_loss"] - r["dev_loss"])
            return prev["flops"] + f * (r["flops"] - prev["flops"])
        prev = r
    return None


def run_seed(args, corpus: Path, seed: int, out: Path) -> dict:
    from speechdistill.methods.curriculum import CurriculumConfig, CurriculumStage
    from speechdistill.run.distill import run_distill

    stages = [CurriculumStage(**s) for s in parse_stages(args.stages)]
    one = base_config(args, corpus, seed, out / f"oneshot_seed{seed}")
    one = replace(one, curriculum=CurriculumConfig())
    if not (Path(one.out_dir) / "train_summary.json").is_file():
        run_distill(one)
    f_one = json.loads((Path(one.out_dir) / "train_summary.json").read_text())["flops"]

    probe = replace(one, curriculum=replace(one.curriculum, stages=stages))
    per_step = stage_flops_per_step(probe)
    proj_flops = sum(st.steps * f for st, f in zip(stages, per_step))
    final_steps = max(1, round((f_one - proj_flops) / per_step[-1]))
    cur = replace(probe, out_dir=str(out / f"curriculum_seed{seed}"),
                  train=replace(probe.train, steps=sum(st.steps for st in stages) + final_steps))
    if not (Path(cur.out_dir) / "train_summary.json").is_file():
        run_distill(cur)
    f_cur = json.loads((Path(cur.out_dir) / "train_summary.json").read_text())["flops"]
    c_one, c_cur = dev_curve(Path(one.out_dir)), dev_curve(Path(cur.out_dir))
    target = c_one[-1]["dev_loss"]
    reach = flops_to_reach(c_cur, target)
    return {
        "seed": seed, "oneshot_steps": one.train.steps, "curriculum_steps": cur.train.steps,
        "stage_flops_per_step": per_step, "oneshot_flops": f_one, "curriculum_flops": f_cur,
        "oneshot_final": c_one[-1], "curriculum_final": c_cur[-1],
        "curriculum_flops_to_oneshot_loss": reach,
        "fraction_of_oneshot_flops": None if reach is None else reach / f_one,
        "curves": {"oneshot": c_one, "curriculum": c_cur},
    }


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = {"oneshot": "tab:blue", "curriculum": "tab:orange"}
    labels = {"oneshot": "one-shot distillation", "curriculum": "curriculum extraction"}
    for arm in ("oneshot", "curriculum"):
        for k, r in enumerate(results):
            c = r["curves"][arm]
            ax.plot([x["flops"] / 1e12 for x in c], [x["dev_loss"] for x in c], color=colors[arm], alpha=0.8,
                    marker="o", markersize=3, label=f"{labels[arm]} (seed {r['seed']})" if k == 0 else None)
    ax.set_xlabel("cumulative training FLOPs (TFLOP; teacher fwd + student fwd/bwd)")
    ax.set_ylabel("dev loss (DistilHuBERT objective, held-out speakers)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus folder with train/dev.jsonl (speechdistill data synth)")
    ap.add_argument("--out", default="bench/out/curriculum", help="output folder")
    ap.add_argument("--teacher", default="builtin:reference", help="teacher spec")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--steps", type=int, default=300, help="one-shot steps (sets the FLOP budget)")
    ap.add_argument("--stages", default="1:1:60,1:2:60", help="student:teacher:steps per projection stage")
    ap.add_argument("--val-every", type=int, default=20, help="validate every N steps")
    ap.add_argument("--dev-batches", type=int, default=8, help="dev batches per validation")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_seed(args, Path(args.corpus), int(s), out) for s in args.seeds.split(",")]
    fracs = [r["fraction_of_oneshot_flops"] for r in results]
    reached = [f for f in fracs if f is not None]
    summary = {
        "args": vars(args), "results": results,
        "reached": len(reached), "seeds": len(results),
        "fraction_mean": statistics.mean(reached) if reached else None,
        "fraction_min": min(reached) if reached else None, "fraction_max": max(reached) if reached else None,
    }
    (out / "curriculum.json").write_text(json.dumps(summary, indent=2))
    plot(results, out / "dev_loss_vs_flops.png",
         f"curriculum {args.stages} vs one-shot, {args.steps}-step budget, teacher {args.teacher}")
    lines = ["| seed | arm | steps | TFLOPs | final dev loss | " + " | ".join(
        k for k in results[0]["oneshot_final"] if k.startswith("dev_cos_L")) + " |",
             "|---|---|---|---|---|" + "---|" * len([k for k in results[0]["oneshot_final"] if k.startswith("dev_cos_L")])]
    for r in results:
        for arm, steps in (("oneshot", r["oneshot_steps"]), ("curriculum", r["curriculum_steps"])):
            f = r[f"{arm}_final"]
            cos = " | ".join(f"{v:.4f}" for k, v in f.items() if k.startswith("dev_cos_L"))
            lines.append(f"| {r['seed']} | {arm} | {steps} | {r[f'{arm}_flops'] / 1e12:.3f} | {f['dev_loss']:.4f} | {cos} |")
    verdict = (
        f"Curriculum reached the one-shot final dev loss in {len(reached)}/{len(results)} seeds"
        + (f", using {summary['fraction_mean']:.2f} of the one-shot FLOPs on average "
           f"(range {summary['fraction_min']:.2f}-{summary['fraction_max']:.2f})." if reached else ".")
    )
    md = "\n".join(lines) + "\n\n" + verdict + "\n"
    (out / "curriculum.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
