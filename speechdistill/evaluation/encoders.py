"""The rows of a comparison: named model specs, loading them (PyTorch or ONNX), fingerprints for the
cache, and how a model's outputs map onto its teacher's layers (layer fidelity)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from speechdistill.config import ConfigError
from speechdistill.evaluation.onnx_encoder import OnnxEncoder, is_onnx_spec
from speechdistill.models.errors import ModelLoadError

log = logging.getLogger(__name__)

DISTILL_INFO = "distill_info.json"
HEADS_FILE = "prediction_heads.safetensors"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    spec: str


def parse_models(items: list[str]) -> list[ModelEntry]:
    """``NAME=SPEC`` or ``SPEC`` (named after the directory or file) -> entries with unique names."""
    out: list[ModelEntry] = []
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep:
            spec = item
            p = Path(item.rstrip("/"))
            name = p.stem if is_onnx_spec(item) else (p.parent.name if p.name == "model" else p.name)
            name = name.replace("builtin:", "").replace(":", "-") or "model"
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise ConfigError(f"models entry {item!r}: expected NAME=SPEC or SPEC")
        out.append(ModelEntry(name, spec))
    names = [e.name for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"model name(s) {dup} given twice; name them: models=[a=DIR1,b=DIR2]")
    return out


def model_path(spec: str) -> Path | None:
    """The local directory or file behind a spec (None for hub ids and tiny:/random: specs)."""
    from speechdistill.models.builtin import PREFIX, resolve_model_path

    s = resolve_model_path(spec) if spec.startswith(PREFIX) else spec
    p = Path(s).expanduser()
    return p if p.exists() else None


def load_model(spec: str, threads: int = 0) -> nn.Module:
    """Any encoder spec ``load_encoder`` reads, or an exported ``.onnx`` file; frozen, eval mode."""
    from speechdistill.models.load import load_encoder
    from speechdistill.models.teacher import prepare_frozen

    if is_onnx_spec(spec):
        return OnnxEncoder(spec, threads)
    try:
        return prepare_frozen(load_encoder(spec))
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as e:  # e.g. a hub id the offline hub cannot resolve
        raise ModelLoadError(f"{spec}: cannot be loaded as an encoder ({str(e).splitlines()[0]})") from None


def fingerprint(spec: str) -> str:
    """Content hash of a model's files (so the cache and finished cells notice a retrained model)."""
    h = hashlib.sha256()
    p = model_path(spec)
    if p is None:
        h.update(spec.encode())
        return h.hexdigest()[:16]
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def num_parameters(model: nn.Module) -> int:
    if isinstance(model, OnnxEncoder):
        import numpy as np
        import onnx

        graph = onnx.load(str(model.path), load_external_data=False).graph
        # Quantised weights come with per-tensor scales and zero points: count the weights only.
        return int(sum(np.prod(t.dims) for t in graph.initializer if len(t.dims) >= 1 and np.prod(t.dims) > 1))
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Layer fidelity: which output of a model predicts which teacher layer


@dataclass
class FidelityMap:
    targets: list[int]  # teacher layers (hidden-state indices, 1..L)
    sources: list[int]  # the model's hidden-state index predicting each target
    how: str
    heads: nn.Module | None = None  # DistilHuBERT's prediction heads, on the last state

    @property
    def applicable(self) -> bool:
        return bool(self.targets)

    def predictions(self, states: torch.Tensor) -> list[torch.Tensor]:
        """``states`` [S, T, D] of one utterance -> one prediction [T, D_teacher] per target."""
        if self.heads is not None:
            with torch.no_grad():
                return [p[0].float() for p in self.heads(states[-1][None].float())]
        return [states[i].float() for i in self.sources]


def _distill_info(spec: str) -> dict:
    p = model_path(spec)
    if p is None or not p.is_dir():
        return {}
    for cand in (p / DISTILL_INFO, p / "encoder" / DISTILL_INFO):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except ValueError:
                log.warning("%s is unreadable: fidelity falls back to matching layers by index", cand)
    return {}


def fidelity_map(spec: str, model: nn.Module, teacher_layers: int) -> FidelityMap:
    """How ``model`` is compared with a teacher of ``teacher_layers`` layers (see the module doc)."""
    n_states = int(model.num_output_layers) + 1
    info = _distill_info(spec)
    if info.get("method") == "distilhubert" and (model_path(spec) / HEADS_FILE).is_file():
        from speechdistill.methods.distilhubert import load_student

        student = load_student(model_path(spec))
        targets = [int(t) for t in student.targets]
        heads = student.prediction_heads.eval()
        return FidelityMap(targets, [n_states - 1] * len(targets), "prediction heads on the last layer", heads)
    targets = getattr(model, "target_layers", None)
    if targets is None and isinstance(model, OnnxEncoder):
        recipe = model.metadata.get("recipe") or ""
        try:
            recipe = json.loads(recipe) if recipe else {}
        except ValueError:
            recipe = {}
        if recipe.get("method") == "gendistiller":
            targets = (recipe.get("gendistiller") or {}).get("targets")
    if targets is not None and len(targets) == n_states - 1:
        return FidelityMap([int(t) for t in targets], list(range(1, n_states)), "generated layer k -> target k")
    if n_states == teacher_layers + 1:
        layers = list(range(1, n_states))
        return FidelityMap(layers, layers, "layer i -> teacher layer i")
    why = "its prediction heads are not in an ONNX file" if info.get("method") == "distilhubert" else \
        f"{n_states - 1} layers vs the teacher's {teacher_layers} and no distillation targets recorded"
    return FidelityMap([], [], f"not applicable: {why}")
