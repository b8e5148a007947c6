"""Parameter counts of students, with and without their training-only prediction heads.

ONE function (``student_parameters``) counts every student the project makes, so every printed ratio
(demo report, benches, RESULTS, recipe headers) compares the same things.  The encoder count is what
inference keeps (for DistilHuBERT: the HF encoder; for GenDistiller: front end + decoder); heads are
DistilHuBERT's prediction heads, dropped after distillation.  GenDistiller's size target is stated
against DistilHuBERT's encoder without heads (``ratio``); the ratio with heads is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

HEADS_FILE = "prediction_heads.safetensors"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tensor shared by several modules counts once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@dataclass(frozen=True)
class StudentSize:
    encoder: int  # kept for inference
    heads: int = 0  # training-only prediction heads

    @property
    def with_heads(self) -> int:
        return self.encoder + self.heads

    def ratio(self, other: StudentSize) -> float:
        """This encoder / the other's encoder (heads excluded on both sides)."""
        return self.encoder / other.encoder

    def ratio_with_heads(self, other: StudentSize) -> float:
        return self.with_heads / other.with_heads

    def as_dict(self) -> dict[str, int]:
        return {"encoder": self.encoder, "heads": self.heads, "with_heads": self.with_heads}


def student_parameters(student: nn.Module | str | Path) -> StudentSize:
    """Sizes of a student module or saved student directory.

    Modules: anything with ``encoder`` and ``prediction_heads`` (DistilHuBERT's training module), a
    wrapper with ``student`` (GenDistiller's training view), or a bare encoder (no heads).
    Directories: the encoder ``load_encoder`` reads, plus ``prediction_heads.safetensors`` if present."""
    if isinstance(student, (str, Path)):
        return _directory_size(Path(student))
    heads = getattr(student, "prediction_heads", None)
    if heads is not None:
        return StudentSize(count_parameters(student.encoder), count_parameters(heads))
    inner = getattr(student, "student", None)
    if isinstance(inner, nn.Module):
        return StudentSize(count_parameters(inner))
    return StudentSize(count_parameters(student))


def _directory_size(path: Path) -> StudentSize:
    from safetensors import safe_open

    from speechdistill.models.load import load_encoder

    encoder = count_parameters(load_encoder(path))
    heads = 0
    if (path / HEADS_FILE).is_file():
        with safe_open(str(path / HEADS_FILE), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                heads += math.prod(f.get_slice(key).get_shape())
    return StudentSize(encoder, heads)
