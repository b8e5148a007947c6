"""The typed parts of a comparison suite: tasks, head budgets, cost and statistics settings.

A task names its data either explicitly (``train``/``dev``/``test`` manifests) or through a data
root of the suite (``data: corpus`` + optional ``split: takes``), so one YAML suite serves any
corpus: ``speechdistill compare mini_superb data.corpus=... data.labelled=...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from speechdistill.asr.ctc_model import CTCHeadConfig
from speechdistill.config import ConfigError
from speechdistill.train.optim import OptimConfig

TaskType = Literal["asr", "ks", "sid", "fidelity", "cost"]
TASK_TYPES: tuple[str, ...] = ("asr", "ks", "sid", "fidelity", "cost")
#: The manifests each task type reads.
TASK_SPLITS = {"asr": ("train", "dev", "test"), "ks": ("train", "dev", "test"), "sid": ("train", "dev", "test"),
               "fidelity": ("test",), "cost": ()}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TaskConfig:
    name: str = ""
    type: TaskType = "asr"
    # A key of the suite's ``data`` roots: a folder holding train/dev/test.jsonl (or, for fidelity, a
    # manifest file); ``split`` picks a sub-folder (``speakers``/``takes`` of `data labelled-folder`).
    data: str = ""
    split: str = ""
    # Explicit manifests (win over data/split).
    train: str = ""
    dev: str = ""
    test: str = ""

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"task name {self.name!r}: use letters, digits, '_', '-', '.' (e.g. ks_takes)")

    def manifests(self, roots: dict[str, str]) -> dict[str, str]:
        """split -> manifest path for the splits this task type reads."""
        out = {}
        for split in TASK_SPLITS[self.type]:
            explicit = getattr(self, split)
            if explicit:
                out[split] = explicit
                continue
            if not self.data:
                raise ConfigError(f"task {self.name}: no {split} manifest (set tasks[].{split} or tasks[].data)")
            if self.data not in roots or not roots[self.data]:
                raise ConfigError(
                    f"task {self.name} reads data root {self.data!r}, which is not set: give data.{self.data}=PATH "
                    f"(--{self.data.replace('_', '-')} PATH) or leave the task out with --tasks"
                )
            root = Path(roots[self.data])
            if root.suffix == ".jsonl":
                if self.split:
                    raise ConfigError(f"task {self.name}: data.{self.data} is a manifest file, so split must be empty")
                out[split] = str(root)
            else:
                out[split] = str(root / self.split / f"{split}.jsonl") if self.split else str(root / f"{split}.jsonl")
        return out


@dataclass
class AsrHeads:
    """The CTC head every encoder gets for ASR (SUPERB's protocol with a CPU-sized BiLSTM)."""

    head: CTCHeadConfig = field(default_factory=lambda: CTCHeadConfig(head="bilstm", lstm_hidden=128, lstm_layers=1))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, warmup_ratio=0.02, schedule="constant"))
    max_steps: int = 3000
    val_every: int = 100
    # Validations without a better dev WER before the head counts as converged and stops.
    patience: int = 5
    max_batch_seconds: float = 24.0
    max_batch_size: int = 32

    def validate(self) -> None:
        if self.max_steps < 1 or self.val_every < 1 or self.patience < 1:
            raise ConfigError("asr: max_steps, val_every and patience must be >= 1")


@dataclass
class UtteranceHeads:
    """The utterance-level head (KS, SID): weighted layer sum of mean-pooled states -> MLP -> classes.

    Mean pooling commutes with the weighted sum and a linear projection, so pooling first is exactly
    SUPERB's utterance-level downstream (projector, mean pooling, linear) with cached pooled features."""

    hidden: int = 256  # 0 = a linear classifier on the pooled features
    dropout: float = 0.1
    normalize_states: bool = True  # layer-normalise each pooled state (layers differ in scale)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-3, warmup_ratio=0.02, schedule="constant", weight_decay=0.01)
    )
    max_steps: int = 6000
    val_every: int = 100
    patience: int = 6
    batch_size: int = 64

    def validate(self) -> None:
        if self.hidden < 0 or not 0 <= self.dropout < 1:
            raise ConfigError("utterance: hidden must be >= 0 and dropout in [0, 1)")
        if self.max_steps < 1 or self.val_every < 1 or self.patience < 1 or self.batch_size < 1:
            raise ConfigError("utterance: max_steps, val_every, patience and batch_size must be >= 1")


@dataclass
class CostSettings:
    seconds: float = 10.0  # input length for MACs, RTF and peak memory
    threads: int = 1  # CPU threads for RTF
    repeats: int = 5
    warmup: int = 1
    # Measure RTF and memory in a fresh child process per model (clean peak memory, no shared caches).
    isolate: bool = True

    def validate(self) -> None:
        if self.seconds < 0.1 or self.threads < 1 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError("cost: seconds >= 0.1, threads >= 1, repeats >= 1, warmup >= 0")


@dataclass
class StatsSettings:
    bootstrap: int = 2000  # resamples for every CI
    confidence: float = 0.95
    seed: int = 0
    # The claim rule (a difference is called "better"/"worse" only when it holds): seeds per cell
    # and, for ASR, the test set's size in utterances and speakers.
    min_seeds: int = 3
    min_test_utterances: int = 400
    min_test_speakers: int = 8

    def validate(self) -> None:
        if self.bootstrap < 100:
            raise ConfigError("stats.bootstrap must be >= 100")
        if not 0.5 < self.confidence < 1:
            raise ConfigError("stats.confidence must be in (0.5, 1)")


@dataclass
class FeatureSettings:
    cache_dir: str = ""  # default OUT/features; share it between runs on the same manifests
    dtype: Literal["float16", "float32"] = "float16"  # frame-level states on disk
    max_batch_seconds: float = 60.0
    max_batch_size: int = 16
