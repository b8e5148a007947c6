"""``speechdistill compare``: a mini-SUPERB over any set of encoders (``evaluation`` holds the machinery).

Models are ``NAME=SPEC`` strings (SPEC: anything ``load_encoder`` reads, or an exported ``.onnx`` file);
tasks come from the suite (a shipped recipe ``recipes/compare/NAME.yaml`` or a YAML file) and read their
manifests from named data roots (``data.corpus``, ``data.labelled``, ...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from speechdistill.config import ConfigError
from speechdistill.evaluation.suite import (
    AsrHeads,
    CostSettings,
    FeatureSettings,
    StatsSettings,
    TaskConfig,
    UtteranceHeads,
)

log = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    out: str = ""
    # NAME=SPEC (or SPEC): model directories, hub ids, builtin:NAME, CTC model directories, .onnx files.
    models: list[str] = field(default_factory=list)
    # The row differences are measured against (default: the first model).
    reference: str = ""
    # More paired differences, ROW:OTHER (e.g. an int8 export against its PyTorch source: gen_int8:gen).
    pairs: list[str] = field(default_factory=list)
    # Layer fidelity compares every row with this teacher: a row name or a spec (default: the reference).
    teacher: str = ""
    # Named data roots the tasks read (see evaluation.suite.TaskConfig).
    data: dict[str, str] = field(default_factory=dict)
    tasks: list[TaskConfig] = field(default_factory=list)
    # Run only these tasks of the suite (names); empty = all.
    only_tasks: list[str] = field(default_factory=list)
    seeds: int = 3
    asr: AsrHeads = field(default_factory=AsrHeads)
    utterance: UtteranceHeads = field(default_factory=UtteranceHeads)
    cost: CostSettings = field(default_factory=CostSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    threads: int = 0  # torch threads for feature extraction and heads (0 = current setting)
    # Finished cells (default OUT/cells); suites sharing one reuse each other's cells with equal settings.
    cells_dir: str = ""
    title: str = ""
    # A smoke run: the report and plots say the numbers are not meaningful.
    smoke: bool = False

    def validate(self) -> None:
        if not self.out:
            raise ConfigError("out is required (--out DIR)")
        if not self.models:
            raise ConfigError("no models: give --models NAME=SPEC,NAME=SPEC (or models=[...] in the suite)")
        if not self.tasks:
            raise ConfigError("the suite has no tasks (use a recipe, e.g. `speechdistill compare digits ...`)")
        if self.seeds < 1:
            raise ConfigError("seeds must be >= 1")
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"task name(s) {dup} appear twice in the suite")
        unknown = [n for n in self.only_tasks if n not in names]
        if unknown:
            raise ConfigError(f"unknown task(s) {unknown}; this suite has: {', '.join(names)}")
        for k, v in self.data.items():
            if not isinstance(v, str):
                raise ConfigError(f"data.{k} must be a path, got {v!r}")
        if self.threads < 0:
            raise ConfigError("threads must be >= 0")


def run_compare(cfg: CompareConfig, command: str | None = None, on_cell=None) -> dict:
    """Check everything, run the missing cells, write OUT/compare.json, compare.md and the Pareto plots.

    Raises ConfigError / BadInputError / ModelLoadError before any training on bad input, and
    ``evaluation.tasks.SuiteInterrupted`` when a signal stopped a head (rerun to continue)."""
    from speechdistill.evaluation.protocol import run_suite

    return run_suite(cfg, command, on_cell)
