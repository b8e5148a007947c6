"""Models shipped inside the package, addressed as ``builtin:NAME``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from speechdistill.models.errors import ModelLoadError

BUILTIN = {"reference": "assets/reference_teacher"}
PREFIX = "builtin:"


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise ModelLoadError(f"no builtin model {name!r}; available: {', '.join(BUILTIN)}")
    path = Path(str(resources.files("speechdistill") / BUILTIN[name]))
    if not ((path / "config.json").is_file() or (path / "ctc_config.json").is_file()):
        raise ModelLoadError(f"builtin model {name!r} is missing from this installation ({path})")
    return path


def resolve_model_path(spec: str) -> str:
    """``builtin:NAME`` -> its directory; anything else unchanged."""
    return str(builtin_path(spec[len(PREFIX):])) if spec.startswith(PREFIX) else spec
