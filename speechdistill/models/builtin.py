"""Teacher specs beyond paths and hub ids: ``tiny:FAMILY[-layer]`` (random, for smoke runs and tests)
and ``builtin:reference`` (the small CTC-trained reference teacher shipped in the package)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from speechdistill.models.errors import ModelLoadError
from speechdistill.models.teacher import Teacher, load_teacher, tiny_teacher

BUILTIN = {"reference": "assets/reference_teacher"}


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise ModelLoadError(f"no builtin model {name!r}; available: {', '.join(BUILTIN)}")
    path = Path(str(resources.files("speechdistill") / BUILTIN[name]))
    if not ((path / "config.json").is_file() or (path / "ctc_config.json").is_file()):
        raise ModelLoadError(f"builtin model {name!r} is missing from this installation ({path})")
    return path


def resolve_model_path(spec: str) -> str:
    """``builtin:NAME`` -> its directory; anything else unchanged."""
    return str(builtin_path(spec.split(":", 1)[1])) if spec.startswith("builtin:") else spec


def resolve_teacher(spec: str, seed: int = 0) -> Teacher:
    if spec.startswith("tiny:"):
        name = spec.split(":", 1)[1]
        family, _, norm = name.partition("-")
        return tiny_teacher(family, norm or "group", seed=seed)
    teacher = load_teacher(resolve_model_path(spec))
    teacher.source = spec  # what the user named (builtin:..., a hub id), not the resolved path
    return teacher
