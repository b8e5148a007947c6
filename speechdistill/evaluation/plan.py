"""Everything a comparison needs, checked before any feature is extracted or head trained: every model
loads, every task's manifests exist and carry what the task reads (transcripts, labels, speakers), the
reference row and the fidelity teacher exist.  Bad input fails here, with the file and the problem."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from speechdistill.config import ConfigError
from speechdistill.data.dataset import load_utterances
from speechdistill.data.errors import BadInputError
from speechdistill.data.manifest import Utterance
from speechdistill.evaluation.encoders import (
    FidelityMap,
    ModelEntry,
    fidelity_map,
    fingerprint,
    load_model,
    parse_models,
)
from speechdistill.evaluation.onnx_encoder import OnnxEncoder
from speechdistill.evaluation.suite import TaskConfig

if TYPE_CHECKING:
    from speechdistill.run.compare import CompareConfig

log = logging.getLogger(__name__)

#: Bumped when a change makes earlier finished cells incomparable (they are then recomputed).
PROTOCOL_VERSION = 1
LABEL_FIELD = {"ks": "label", "sid": "speaker"}


@dataclass
class ModelInfo:
    entry: ModelEntry
    fingerprint: str
    kind: str  # "pytorch", "onnx fp32", "onnx int8"
    num_states: int
    hidden_size: int
    fidelity: FidelityMap | None = None

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass
class TaskPlan:
    cfg: TaskConfig
    manifests: dict[str, str]
    utts: dict[str, list[Utterance]]
    classes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def type(self) -> str:
        return self.cfg.type

    @property
    def test_utterances(self) -> int:
        return len(self.utts.get("test", []))

    @property
    def test_speakers(self) -> int:
        return len({u.speaker for u in self.utts.get("test", []) if u.speaker})

    def labels(self, split: str) -> list[int]:
        key = LABEL_FIELD[self.type]
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[getattr(u, key)] for u in self.utts[split]]


@dataclass
class Cell:
    model: ModelInfo
    task: TaskPlan
    seed: int | None  # None: a measurement without training (fidelity, cost)

    @property
    def key(self) -> str:
        return f"{self.model.name}/{self.task.name}" + ("" if self.seed is None else f"/seed{self.seed}")


@dataclass
class Plan:
    models: list[ModelInfo]
    tasks: list[TaskPlan]
    reference: str
    teacher: ModelInfo | None
    seeds: list[int]
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (row, row it is compared with)

    def cells(self) -> list[Cell]:
        out = []
        for m in self.models:
            for t in self.tasks:
                seeds = self.seeds if t.type in ("asr", "ks", "sid") else [None]
                out.extend(Cell(m, t, s) for s in seeds)
        return out


def describe_model(entry: ModelEntry, teacher_layers: int | None) -> ModelInfo:
    model = load_model(entry.spec)
    if isinstance(model, OnnxEncoder):
        kind = f"onnx {model.precision}"
    else:
        kind = "pytorch"
    fmap = fidelity_map(entry.spec, model, teacher_layers) if teacher_layers else None
    return ModelInfo(entry, fingerprint(entry.spec), kind, int(model.num_output_layers) + 1, int(model.hidden_size), fmap)


def _check_task(task: TaskConfig, roots: dict[str, str]) -> TaskPlan:
    manifests = task.manifests(roots)
    utts: dict[str, list[Utterance]] = {}
    for split, path in manifests.items():
        utts[split] = load_utterances(path)[0]  # a missing or broken manifest raises ManifestError here
    plan = TaskPlan(task, manifests, utts)
    if task.type == "asr":
        for split, us in utts.items():
            missing = [u.id for u in us if not u.text]
            if missing:
                raise BadInputError(
                    f"task {task.name}: {manifests[split]}: {len(missing)} utterance(s) have no 'text' "
                    f"(e.g. {missing[:3]}); ASR needs transcripts"
                )
    elif task.type in LABEL_FIELD:
        key = LABEL_FIELD[task.type]
        for split, us in utts.items():
            missing = [u.id for u in us if not getattr(u, key)]
            if missing:
                hint = ("add a 'label' field (e.g. `speechdistill data labelled-folder`)" if key == "label"
                        else "speaker identification needs the 'speaker' field")
                raise BadInputError(
                    f"task {task.name} ({task.type}): {manifests[split]}: {len(missing)} of {len(us)} utterance(s) "
                    f"have no '{key}' (e.g. {missing[:3]}); {hint}"
                )
        plan.classes = sorted({getattr(u, key) for u in utts["train"]})
        if len(plan.classes) < 2:
            raise BadInputError(f"task {task.name}: {manifests['train']} has only {len(plan.classes)} class(es)")
        for split in ("dev", "test"):
            unseen = sorted({getattr(u, key) for u in utts[split]} - set(plan.classes))
            if unseen:
                what = "speaker-disjoint splits cannot be used for speaker identification; " if task.type == "sid" else ""
                raise BadInputError(
                    f"task {task.name}: {manifests[split]} has {key}(s) {unseen[:5]} that never occur in "
                    f"{manifests['train']}; {what}a classifier cannot predict unseen classes"
                )
    return plan


def build_plan(cfg: CompareConfig) -> Plan:
    """Resolve and check the whole suite (see the module doc); loads every model once."""
    entries = parse_models(cfg.models)
    names = [e.name for e in entries]
    reference = cfg.reference or names[0]
    if reference not in names:
        raise ConfigError(f"reference {reference!r} is not one of the models ({', '.join(names)})")
    pairs = []
    for item in cfg.pairs:
        a, sep, b = item.partition(":")
        if not sep or a not in names or b not in names or a == b:
            raise ConfigError(f"pairs entry {item!r}: expected ROW:OTHER_ROW with two different model names "
                              f"({', '.join(names)})")
        pairs.append((a, b))
    selected = [t for t in cfg.tasks if not cfg.only_tasks or t.name in cfg.only_tasks]
    tasks = [_check_task(t, cfg.data) for t in selected]

    teacher = None
    teacher_layers = None
    if any(t.type == "fidelity" for t in tasks):
        spec = cfg.teacher or reference
        by_name = {e.name: e for e in entries}
        t_entry = by_name.get(spec) or ModelEntry("teacher", spec)
        teacher = describe_model(t_entry, None)
        teacher_layers = teacher.num_states - 1
        if teacher_layers < 1:
            raise ConfigError(f"fidelity teacher {spec}: it returns only one hidden state (export it with --outputs all)")
    models = []
    for e in entries:
        log.info("checking model %s (%s)", e.name, e.spec)
        models.append(describe_model(e, teacher_layers))
    # The fidelity teacher first: its features are extracted once and every row compares to them.
    if teacher is not None:
        models.sort(key=lambda m: m.fingerprint != teacher.fingerprint)
    return Plan(models, tasks, reference, teacher, list(range(cfg.seeds)), pairs)


def cell_hash(cell: Cell, cfg: CompareConfig, manifest_hashes: dict[str, str], teacher_fp: str = "") -> str:
    """What a finished cell's result depends on; a rerun recomputes cells whose hash changed."""
    t = cell.task.type
    settings = {"asr": cfg.asr, "ks": cfg.utterance, "sid": cfg.utterance, "cost": cfg.cost}.get(t)
    doc = {
        "protocol": PROTOCOL_VERSION, "model": cell.model.fingerprint, "task": asdict(cell.task.cfg),
        "manifests": manifest_hashes, "seed": cell.seed, "settings": asdict(settings) if settings else None,
        "teacher": teacher_fp if t == "fidelity" else "",
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
