"""``speechdistill study``: train large, then compress (Li et al., ICML 2020), as one resumable command.

Trains every size in ``sizes`` from scratch with character CTC (a random HuBERT-architecture config) under
one training budget (FLOPs or wall seconds), compresses each along the sweep (STAT at several MAC
budgets with and without CNN pruning, magnitude pruning, ONNX int8, pruned-then-int8, DistilHuBERT
distillation into one student shape), scores every model with the compare command's protocol (frozen
encoder, the same ASR head, N seeds, CIs, measured cost) and draws the accuracy-versus-cost frontier.

Layout of OUT::

    study_state.json          one entry per model step (resume: finished steps are reused)
    train/SIZE/               CTC training run (model/ is the trained model)
    compress/ROW/             pruned encoders, ONNX exports, distillation runs
    student_init/KEY/         the one student shape every distillation starts from (random weights)
    eval/                     the comparison (cells are reused on rerun; compare.json, compare.md)
    study.json, study.md      frontier points, Pareto fronts, the equal-cost answer
    study_vs_macs.png, study_vs_rtf.png
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from speechdistill.asr.ctc_model import CTCHeadConfig
from speechdistill.config import ConfigError, to_dict
from speechdistill.data.dataset import DataConfig
from speechdistill.errors import SpeechDistillError
from speechdistill.evaluation.suite import AsrHeads, CostSettings, FeatureSettings, StatsSettings, TaskConfig
from speechdistill.train.engine import TrainConfig
from speechdistill.train.optim import OptimConfig

log = logging.getLogger(__name__)

PRUNE_FAMILIES = ("stat", "stat_cnn", "magnitude")
# Training FLOPs per forward MAC: 2 FLOPs per MAC, backward about twice the forward (Kaplan et al. 2020).
TRAIN_FLOPS_PER_MAC = 6.0
STEP_SLACK = 1.03
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SHORT = {"stat": "stat", "stat_cnn": "statcnn", "magnitude": "mag"}  # row names: m4_stat50, m4_statcnn50, m4_mag50


class StudyInterrupted(SpeechDistillError):
    """A training run inside the study stopped on a signal: rerun the same command to continue."""


@dataclass
class StudySize:
    name: str = ""
    # HF config keys of this size (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, ...),
    # on top of training.shared_config.
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyBudget:
    # flops: each size sees audio until 6 x (its MACs per audio second) x (audio seconds) reaches ``value``;
    # seconds: each size trains for ``value`` seconds of wall time (hardware-dependent, state the machine).
    kind: Literal["flops", "seconds"] = "flops"
    value: float = 0.0

    def validate(self) -> None:
        if not self.value > 0:
            raise ConfigError(f"budget.value={self.value}: give the training budget per size, > 0 "
                              f"({'FLOPs, e.g. 1e15' if self.kind == 'flops' else 'seconds, e.g. 600'})")


@dataclass
class StudyTraining:
    """How every size is trained: CTC from a random encoder, the encoder unfrozen."""

    family: Literal["hubert", "wavlm", "wav2vec2"] = "hubert"
    # HF config keys every size shares (preset, CNN widths, positional conv, ...).
    shared_config: dict[str, Any] = field(default_factory=lambda: {"preset": "base"})
    head: CTCHeadConfig = field(default_factory=lambda: CTCHeadConfig(head="linear"))
    # data.train_manifest / dev_manifest default to CORPUS/train.jsonl and CORPUS/dev.jsonl.
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1.5e-3, warmup_ratio=0.1))
    # train.steps sets the schedule length for a seconds budget; a FLOP budget sets it from the audio budget.
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class StudySweep:
    stat_keep_macs: list[float] = field(default_factory=lambda: [0.7, 0.5, 0.3])
    # STAT with the CNN kept (false) and with CNN channels pruned too (true).
    stat_prune_cnn: list[bool] = field(default_factory=lambda: [False, True])
    magnitude_keep_macs: list[float] = field(default_factory=lambda: [0.7, 0.5, 0.3])
    # Magnitude pruning may prune CNN channels too (small models spend most MACs in the CNN).
    magnitude_prune_cnn: bool = False
    int8: bool = True  # ONNX int8 of every trained model
    # Prune, then int8: which pruned families also get an int8 export (stat, stat_cnn, magnitude).
    int8_after: list[str] = field(default_factory=lambda: ["stat"])
    distill: bool = True
    # Pruning calibration (the training manifest's utterances; no transcripts used).
    num_calib: int = 128
    max_calib_seconds: float = 10.0
    sketch_rows: int = 0  # 0 = exact activations
    # int8 parity: the WER check on the dev set may raise at most this many WER points (absolute).
    int8_max_wer_increase: float = 1.0


@dataclass
class StudyDistill:
    """DistilHuBERT into one student shape for every trained size (targets: evenly spaced teacher layers)."""

    student: dict[str, Any] = field(default_factory=lambda: {
        "preset": "base", "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 384})
    num_targets: int = 3
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_seconds=3.0))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_ratio=0.05))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=500))


@dataclass
class StudyEvaluate:
    """The compare command's protocol (see ``speechdistill compare --help``)."""

    seeds: int = 3
    tasks: list[TaskConfig] = field(default_factory=lambda: [
        TaskConfig(name="asr", type="asr", data="corpus"), TaskConfig(name="cost", type="cost")])
    # More named data roots for the tasks (``corpus`` is the study's corpus), e.g. labelled: for KS/SID.
    data: dict[str, str] = field(default_factory=dict)
    score_task: str = "asr"  # the frontier's score (an asr task: WER)
    asr: AsrHeads = field(default_factory=AsrHeads)
    cost: CostSettings = field(default_factory=CostSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    # Equal inference cost: a larger size's row counts as "at most the smaller size's MACs" within this fraction.
    equal_cost_tolerance: float = 0.05


@dataclass
class StudyConfig:
    out: str = ""
    # Folder with train/dev/test.jsonl (transcripts; test on held-out voices), e.g. `speechdistill data synth`.
    corpus: str = ""
    title: str = "Train large, then compress"
    sizes: list[StudySize] = field(default_factory=list)
    budget: StudyBudget = field(default_factory=StudyBudget)
    training: StudyTraining = field(default_factory=StudyTraining)
    sweep: StudySweep = field(default_factory=StudySweep)
    distill: StudyDistill = field(default_factory=StudyDistill)
    evaluate: StudyEvaluate = field(default_factory=StudyEvaluate)
    seed: int = 0
    smoke: bool = False  # a plumbing run: the report and plots say the numbers are not meaningful

    def validate(self) -> None:
        if not self.out:
            raise ConfigError("out is required (--out DIR)")
        if not self.corpus:
            raise ConfigError("corpus is required (--corpus DIR with train/dev/test.jsonl)")
        if len(self.sizes) < 1:
            raise ConfigError("sizes: give at least one size (the study wants >= 3, about 10x apart in params)")
        names = [s.name for s in self.sizes]
        for n in names:
            if not _NAME.match(n or ""):
                raise ConfigError(f"sizes[].name={n!r}: use letters, digits, '_' and '-' (e.g. m1)")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"sizes: name(s) {dup} appear twice")
        s = self.sweep
        for key in ("stat_keep_macs", "magnitude_keep_macs"):
            bad = [k for k in getattr(s, key) if not 0 < k < 1]
            if bad:
                raise ConfigError(f"sweep.{key}={getattr(s, key)}: fractions of MACs to keep, each in (0, 1)")
        unknown = [f for f in s.int8_after if f not in PRUNE_FAMILIES]
        if unknown:
            raise ConfigError(f"sweep.int8_after: unknown famil(ies) {unknown}; choose from {', '.join(PRUNE_FAMILIES)}")
        if s.num_calib < 1 or s.max_calib_seconds <= 0 or s.sketch_rows < 0:
            raise ConfigError("sweep: num_calib >= 1, max_calib_seconds > 0, sketch_rows >= 0")
        if self.distill.num_targets < 1:
            raise ConfigError(f"distill.num_targets={self.distill.num_targets}: must be >= 1")
        ev = self.evaluate
        if ev.seeds < 1:
            raise ConfigError("evaluate.seeds must be >= 1")
        score = next((t for t in ev.tasks if t.name == ev.score_task), None)
        if score is None or score.type != "asr":
            raise ConfigError(f"evaluate.score_task={ev.score_task!r} must name an asr task of evaluate.tasks "
                              f"({', '.join(t.name for t in ev.tasks)})")
        if not any(t.type == "cost" for t in ev.tasks):
            raise ConfigError("evaluate.tasks needs a cost task (the frontier's RTF axis)")
        if self.training.data.crop_seconds:
            raise ConfigError("training.data.crop_seconds must be 0 (CTC: crops break transcript alignment)")


@dataclass
class Step:
    """One model of the study: how it is made, where it lands, what the comparison loads."""

    name: str  # the row name
    size: str
    compression: str  # frontier.MARKERS key
    kind: Literal["train", "prune", "int8", "distill"]
    parent: str  # step name ("" for training)
    settings: dict[str, Any]
    out: Path
    spec: str  # what load_encoder / compare reads


def _pct(x: float) -> str:
    return f"{round(100 * x):d}"


def plan_steps(cfg: StudyConfig) -> list[Step]:
    """Every model step, parents before children (a step's parent is trained/made first)."""
    out = Path(cfg.out)
    s = cfg.sweep
    steps: list[Step] = []
    for size in cfg.sizes:
        run = out / "train" / size.name
        steps.append(Step(size.name, size.name, "none", "train", "", {"size": to_dict(size)}, run, str(run / "model")))
        pruned: list[tuple[str, Step]] = []
        for fam, keeps in (("stat", s.stat_keep_macs if False in s.stat_prune_cnn else []),
                           ("stat_cnn", s.stat_keep_macs if True in s.stat_prune_cnn else []),
                           ("magnitude", s.magnitude_keep_macs)):
            for k in keeps:
                name = f"{size.name}_{_SHORT[fam]}{_pct(k)}"
                d = out / "compress" / name
                cnn = fam == "stat_cnn" or (fam == "magnitude" and s.magnitude_prune_cnn)
                st = Step(name, size.name, fam, "prune", size.name,
                          {"family": fam, "keep_macs": k, "prune_cnn": cnn}, d, str(d))
                steps.append(st)
                pruned.append((fam, st))
        if s.int8:
            d = out / "compress" / f"{size.name}_int8"
            steps.append(Step(f"{size.name}_int8", size.name, "int8", "int8", size.name, {}, d,
                              str(d / "model.int8.onnx")))
        for fam, p in pruned:
            if fam in s.int8_after:
                d = out / "compress" / f"{p.name}_int8"
                steps.append(Step(f"{p.name}_int8", size.name, "prune_int8", "int8", p.name, {}, d,
                                  str(d / "model.int8.onnx")))
        if s.distill:
            d = out / "compress" / f"{size.name}_distill"
            steps.append(Step(f"{size.name}_distill", size.name, "distill", "distill", size.name, {}, d,
                              str(d / "model")))
    return steps


# ---------------------------------------------------------------------------------------------
# Making one model


def _manifests(cfg: StudyConfig) -> dict[str, str]:
    from speechdistill.errors import BadInputError

    root = Path(cfg.corpus)
    found = {s: root / f"{s}.jsonl" for s in ("train", "dev", "test")}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise BadInputError(f"corpus {root}: missing {', '.join(missing)} (make one with `speechdistill data synth "
                            "--out DIR --text digits --test-utterances 400 --test-speakers 8`)")
    return {k: str(v) for k, v in found.items()}


def _data(d: DataConfig, manifests: dict[str, str]) -> DataConfig:
    return replace(d, train_manifest=d.train_manifest or manifests["train"],
                   dev_manifest=d.dev_manifest or manifests["dev"])


def encoder_config(cfg: StudyConfig, size: StudySize) -> dict[str, Any]:
    return {**cfg.training.shared_config, **size.config}


def macs_per_second(family: str, config: dict[str, Any]) -> float:
    """Forward MACs per second of audio of a random encoder of this config (10 s input, attention included)."""
    from speechdistill.models.factory import random_encoder
    from speechdistill.prune.budget import count_encoder_macs

    enc = random_encoder(family, dict(config))
    return count_encoder_macs(enc.model.config, seconds=10.0).total / 10.0


def mean_batch_audio(data: DataConfig) -> float:
    """Audio seconds in an average training batch (the dynamic batcher's packing of this manifest)."""
    from speechdistill.data.batch import make_batches
    from speechdistill.data.dataset import SAMPLE_RATE, load_utterances

    utts, _ = load_utterances(data.train_manifest, data.on_bad_audio, data.min_seconds, data.max_seconds)
    sizes = [u.num_samples for u in utts]
    # Shuffled as in training (noisy lengths pack a little worse than sorted ones), over a few epochs.
    n = [len(make_batches(sizes, int(data.max_batch_seconds * SAMPLE_RATE), data.max_batch_size, shuffle=True,
                          seed=epoch)) for epoch in range(4)]
    return sum(sizes) / SAMPLE_RATE / max(1.0, sum(n) / len(n))


def training_plan(cfg: StudyConfig, size: StudySize, data: DataConfig) -> tuple[TrainConfig, dict[str, float]]:
    """The size's TrainConfig under the study's budget, and the numbers behind it."""
    t = cfg.training.train
    macs = macs_per_second(cfg.training.family, encoder_config(cfg, size))
    info = {"macs_per_second": macs}
    if cfg.budget.kind == "seconds":
        return replace(t, max_train_seconds=cfg.budget.value, seed=cfg.seed), info
    audio = cfg.budget.value / (TRAIN_FLOPS_PER_MAC * macs)
    per_batch = mean_batch_audio(data)
    # A little slack so the audio budget, not the step count, ends training (the schedule is cut at ~97 %).
    steps = max(1, math.ceil(STEP_SLACK * audio / per_batch))
    info.update(audio_seconds_budget=audio, mean_batch_audio=per_batch, steps=steps)
    val_every = t.val_every if t.val_every < steps else 0
    save_every = t.save_every if t.save_every < steps else 0
    return replace(t, steps=steps, max_audio_seconds=audio, val_every=val_every, save_every=save_every,
                   seed=cfg.seed), info


class _Maker:
    """Runs one step with the existing drivers (finetune-ctc, prune, export, distill)."""

    def __init__(self, cfg: StudyConfig, manifests: dict[str, str]):
        self.cfg, self.manifests = cfg, manifests
        self.sizes = {s.name: s for s in cfg.sizes}

    def __call__(self, step: Step, parent_spec: str, resume: bool) -> dict[str, Any]:
        return getattr(self, "_" + step.kind)(step, parent_spec, resume)

    def _run_training(self, runner, cfg, resume: bool, out: Path) -> dict[str, Any]:
        res = runner(cfg, resume=resume and out.exists(), overwrite=not resume and out.exists())
        if res.interrupted:
            raise StudyInterrupted(f"training in {out} stopped at step {res.step}")
        return {"steps": res.step, "metrics": res.metrics}

    def _train(self, step: Step, _parent: str, resume: bool) -> dict[str, Any]:
        from speechdistill.methods.ctc import CTCConfig
        from speechdistill.run.finetune import FinetuneConfig, run_finetune
        from speechdistill.utils.io import read_json

        c = self.cfg
        size = self.sizes[step.size]
        data = _data(c.training.data, self.manifests)
        train, info = training_plan(c, size, data)
        fcfg = FinetuneConfig(
            out_dir=str(step.out),
            ctc=CTCConfig(upstream=f"random:{c.training.family}", upstream_config=encoder_config(c, size),
                          head=c.training.head),
            data=data, optim=c.training.optim, train=train,
        )
        info.update(self._run_training(run_finetune, fcfg, resume, step.out))
        summary = read_json(step.out / "train_summary.json")
        info.update(audio_seconds_seen=summary["audio_seconds_seen"], loop_seconds=summary.get("loop_seconds"),
                    train_flops=TRAIN_FLOPS_PER_MAC * info["macs_per_second"] * summary["audio_seconds_seen"])
        return info

    def _prune(self, step: Step, parent_spec: str, _resume: bool) -> dict[str, Any]:
        from speechdistill.run.prune import PruneConfig, run_prune

        s = self.cfg.sweep
        fam = step.settings["family"]
        report = run_prune(PruneConfig(
            method="magnitude" if fam == "magnitude" else "stat", model=parent_spec, calib=self.manifests["train"],
            keep_macs=step.settings["keep_macs"], out=str(step.out), num_calib=s.num_calib,
            max_seconds=s.max_calib_seconds, prune_cnn=step.settings["prune_cnn"], sketch_rows=s.sketch_rows,
            seed=self.cfg.seed, overwrite=True,
        ))
        return {k: report.get(k) for k in ("keep_macs_achieved", "params_before", "params_after", "wall_time_s")}

    def _int8(self, step: Step, parent_spec: str, _resume: bool) -> dict[str, Any]:
        from speechdistill.export.parity import ParityOptions
        from speechdistill.run.export import ExportConfig, run_export

        run_export(ExportConfig(
            model=parent_spec, out=str(step.out), int8=True, outputs="all",
            parity=ParityOptions(manifest=self.manifests["dev"], threads=1, max_utterances=4, wer_utterances=100,
                                 int8_max_wer_increase=self.cfg.sweep.int8_max_wer_increase),
        ))
        return {}

    def _distill(self, step: Step, parent_spec: str, resume: bool) -> dict[str, Any]:
        from speechdistill.methods.distilhubert import DistilHuBERTConfig
        from speechdistill.models.load import load_encoder
        from speechdistill.run.distill import DistillConfig, run_distill

        c = self.cfg
        layers = int(load_encoder(parent_spec).num_output_layers)
        n = min(c.distill.num_targets, layers)
        targets = sorted({max(1, round(layers * (i + 1) / n)) for i in range(n)})
        dcfg = DistillConfig(
            method="distilhubert", teacher=parent_spec, out_dir=str(step.out),
            distilhubert=DistilHuBERTConfig(targets=targets, student_init=str(student_init(c))),
            data=_data(c.distill.data, self.manifests), optim=c.distill.optim,
            train=replace(c.distill.train, seed=c.seed),
        )
        info = self._run_training(run_distill, dcfg, resume, step.out)
        info["targets"] = targets
        return info


def student_init(cfg: StudyConfig) -> Path:
    """The random student every distillation starts from (written once, atomically; same seed, same shape)."""
    from speechdistill.models.factory import random_encoder
    from speechdistill.study.state import step_key
    from speechdistill.utils.io import atomic_dir

    # Named by its shape and seed: a changed student shape gets a new folder, never a stale one.
    path = Path(cfg.out) / "student_init" / step_key({"family": cfg.training.family, "student": cfg.distill.student,
                                                      "seed": cfg.seed})
    if not (path / "config.json").is_file():
        enc = random_encoder(cfg.training.family, dict(cfg.distill.student), seed=cfg.seed)
        with atomic_dir(path) as tmp:
            enc.save_pretrained(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# The whole study


def _compare_config(cfg: StudyConfig, rows: list[Step], pairs: list[str]):
    from speechdistill.run.compare import CompareConfig

    ev = cfg.evaluate
    return CompareConfig(
        out=str(Path(cfg.out) / "eval"), models=[f"{s.name}={s.spec}" for s in rows], reference=rows[0].name,
        pairs=pairs, data={"corpus": cfg.corpus, **ev.data}, tasks=list(ev.tasks), seeds=ev.seeds, asr=ev.asr,
        cost=ev.cost, stats=ev.stats, features=ev.features, title=cfg.title, smoke=cfg.smoke,
    )


def run_study(cfg: StudyConfig, make=None, on_cell=None) -> dict:
    """Make every missing model, score all of them, write the frontier; returns the study document.

    ``make(step, parent_spec, resume) -> info`` replaces the real model makers (tests); ``on_cell`` is
    called for every newly computed comparison cell.  Raises StudyInterrupted when a training run or a
    comparison head was stopped by a signal (rerun the same command to continue)."""
    import os

    from tqdm.auto import tqdm

    from speechdistill.evaluation.encoders import fingerprint
    from speechdistill.evaluation.features import manifest_hash
    from speechdistill.evaluation.tasks import SuiteInterrupted
    from speechdistill.study.state import STATE_FILE, StudyState, step_key
    from speechdistill.utils.io import ensure_dir

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Pruning, export and the comparison are single-process steps; several processes would race on OUT.
        raise ConfigError("speechdistill study runs as one process: launch it with `accelerate launch "
                          "--num_processes 1 -m speechdistill study ...` (one GPU) or without accelerate")
    t0 = time.perf_counter()
    manifests = _manifests(cfg)
    out = ensure_dir(cfg.out, "--out folder")
    state = StudyState(out / STATE_FILE)
    steps = plan_steps(cfg)
    maker = make or _Maker(cfg, manifests)
    # What each kind of step depends on besides its own settings and its parent's files (the corpus by content).
    data = {"seed": cfg.seed, "corpus": {k: manifest_hash(v) for k, v in manifests.items()}}
    per_kind = {"train": {**data, "training": to_dict(cfg.training), "budget": to_dict(cfg.budget)},
                "prune": {**data, **{k: getattr(cfg.sweep, k) for k in ("num_calib", "max_calib_seconds",
                                                                        "sketch_rows")}},
                "int8": {**data, "max_wer": cfg.sweep.int8_max_wer_increase},
                "distill": {**data, **to_dict(cfg.distill)}}
    done: dict[str, dict] = {}
    bar = tqdm(total=len(steps) + 1, desc="study", unit="step", dynamic_ncols=True)
    made = reused = 0
    try:
        for step in steps:
            bar.set_postfix_str(step.name)
            parent = done.get(step.parent) if step.parent else None
            if step.parent and (parent is None or parent["status"] != "done"):
                state.mark(step.name, "", "skipped", info={"reason": f"{step.parent} was not made"})
                done[step.name] = state.steps[step.name]
                bar.update(1)
                continue
            parent_spec = parent["spec"] if parent else ""
            key = step_key({**step.settings, **per_kind[step.kind], "kind": step.kind},
                           fingerprint(parent_spec) if parent_spec else "")
            entry = state.finished(step.name, key)
            if entry is None:
                resume = state.started_with(step.name, key)
                state.mark(step.name, key, "started", step.spec)
                s0 = time.perf_counter()
                try:
                    info = maker(step, parent_spec, resume)
                    status = "done"
                except StudyInterrupted:
                    raise
                except SpeechDistillError as e:  # e.g. an unreachable MAC budget, a failed int8 parity check
                    if step.kind == "train":
                        raise
                    log.warning("%s: %s (left out of the study)", step.name, str(e).splitlines()[0])
                    info, status = {"reason": str(e).splitlines()[0]}, "skipped"
                state.mark(step.name, key, status, step.spec, time.perf_counter() - s0, info)
                made += 1
            else:
                reused += 1
            done[step.name] = state.steps[step.name]
            bar.update(1)
        rows = [s for s in steps if done[s.name]["status"] == "done"]
        bar.set_postfix_str("evaluating")
        try:
            doc = _evaluate(cfg, rows, done, on_cell)
        except SuiteInterrupted as e:
            raise StudyInterrupted(f"the comparison stopped during {e}") from None
        bar.update(1)
    finally:
        bar.close()
    doc.update(models_made=made, models_reused=reused, seconds=time.perf_counter() - t0)
    _write(cfg, doc)
    log.info("study: %d model(s) made, %d reused; wrote %s", made, reused, Path(cfg.out) / "study.md")
    return doc


def _evaluate(cfg: StudyConfig, rows: list[Step], done: dict[str, dict], on_cell) -> dict:
    """Two passes of the comparison: all cells, then (cells reused) with the equal-cost pairs added."""
    from speechdistill.run.compare import run_compare
    from speechdistill.study.frontier import equal_cost_answers

    if not rows:
        raise ConfigError("no model was made: nothing to evaluate")
    cmp = run_compare(_compare_config(cfg, rows, []), command="speechdistill study", on_cell=on_cell)
    points = _points(cfg, rows, cmp)
    # "Larger" by the trained model's parameters, whatever order the recipe lists the sizes in.
    params = {p.name: p.params for p in points if not p.compressed}
    order = sorted((s.name for s in cfg.sizes), key=lambda n: params.get(n, math.inf))
    answers = equal_cost_answers(points, order, {}, cfg.evaluate.equal_cost_tolerance)
    pairs = sorted({f"{a['rival']}:{a['baseline']}" for a in answers if "rival" in a})
    if pairs:
        cmp = run_compare(_compare_config(cfg, rows, pairs), command="speechdistill study", on_cell=on_cell)
    diffs = {}
    for r in cmp["records"]:
        if r["task"] == cfg.evaluate.score_task:
            for other, d in (r.get("vs_pairs") or {}).items():
                diffs[(r["model"], other)] = d
    answers = equal_cost_answers(points, order, diffs, cfg.evaluate.equal_cost_tolerance)
    return {"compare": cmp, "points": points, "answers": answers,
            "steps": dict(done), "sizes": order}


def _points(cfg: StudyConfig, rows: list[Step], cmp: dict):
    from speechdistill.study.frontier import Point

    by = {(r["model"], r["task"]): r for r in cmp["records"]}
    out = []
    for s in rows:
        r = by[(s.name, cfg.evaluate.score_task)]
        if r["mean"] is None:
            continue
        out.append(Point(s.name, s.size, s.compression, float(r["params"]), float(r["macs_per_second"]), r["rtf"],
                         r.get("file_mb"), float(r["mean"]), float(r["ci_low"]), float(r["ci_high"])))
    return out


def _write(cfg: StudyConfig, doc: dict) -> None:
    from speechdistill.study.frontier import frontier_markdown, frontier_plots, pareto_front, points_json
    from speechdistill.utils.io import atomic_write_json, atomic_write_text

    out = Path(cfg.out)
    points = doc["points"]
    plots = frontier_plots(points, doc["sizes"], "wer", out, cfg.title, cfg.smoke)
    trained = {n: e.get("info", {}) for n, e in doc["steps"].items() if n in doc["sizes"]}
    skipped = {n: e["info"].get("reason", "") for n, e in doc["steps"].items() if e["status"] == "skipped"}
    js = {
        "title": cfg.title, "smoke": cfg.smoke, "budget": to_dict(cfg.budget), "sizes": doc["sizes"],
        "trained": trained, "points": points_json(points),
        "pareto": {c: [p.name for p in pareto_front(points, c)] for c in ("macs", "rtf")},
        "equal_cost": doc["answers"], "skipped": skipped, "plots": [p.name for p in plots],
        "models_made": doc["models_made"], "models_reused": doc["models_reused"], "seconds": doc["seconds"],
        "protocol": doc["compare"]["protocol"], "versions": doc["compare"]["versions"], "config": to_dict(cfg),
    }
    atomic_write_json(out / "study.json", js)
    budget = (f"{cfg.budget.value:.3g} training FLOPs per size (6 x MACs per audio second x audio seconds)"
              if cfg.budget.kind == "flops" else f"{cfg.budget.value:g} s of training wall time per size")
    lines = [f"# {cfg.title}" + (" (SMOKE RUN: numbers not meaningful)" if cfg.smoke else ""), "",
             (f"Budget: {budget}. Study time {doc['seconds']:.0f} s ({doc['models_made']} model(s) made, "
             f"{doc['models_reused']} reused)."), "", "## Trained sizes", "",
             "| size | params (M) | MACs/s (G) | steps | audio seen (s) | training FLOPs (of budget) | loop time (s) |",
             "|---|---|---|---|---|---|---|"]
    params = {p.name: p.params for p in points}
    for n in doc["sizes"]:
        t = trained.get(n, {})
        flops = t.get("train_flops", 0)
        share = f" ({100 * flops / cfg.budget.value:.1f} %)" if cfg.budget.kind == "flops" else ""
        lines.append(f"| {n} | {params.get(n, float('nan')) / 1e6:.2f} | {t.get('macs_per_second', 0) / 1e9:.3f} "
                     f"| {t.get('steps', '-')} | {t.get('audio_seconds_seen', 0):.0f} | {flops:.3g}{share} "
                     f"| {t.get('loop_seconds') or 0:.0f} |")
    lines += ["", "## Frontier", "", *(f"![{p.stem}]({p.name})" for p in plots), "",
              frontier_markdown(points, "wer", doc["answers"])]
    if skipped:
        lines += ["## Left out", "", *(f"- {n}: {why}" for n, why in skipped.items()), ""]
    lines += ["## Protocol", "", doc["compare"]["protocol"], "",
              "Every row's full numbers (CIs, cost, heads): eval/compare.md.", ""]
    atomic_write_text(out / "study.md", "\n".join(lines))
