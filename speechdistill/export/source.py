"""What an export reads (an encoder, or a CTC model around one) and the metadata every export carries.

Both exporters (ONNX and safetensors) load their source here: frozen (eval, no gradients, layer drop
0), with the provenance (teacher, recipe) read from the student's ``distill_info.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import speechdistill
from speechdistill import SAMPLE_RATE
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.teacher import prepare_frozen

log = logging.getLogger(__name__)

CTC_CONFIG = "ctc_config.json"
VOCAB_FILES = ("vocab.json", "vocab_meta.json")
DISTILL_INFO = "distill_info.json"


@dataclass
class ExportSource:
    """What an export reads: an encoder (project interface), or a CTC model around one."""

    path: Path
    kind: str  # "encoder" | "ctc"
    encoder: nn.Module
    ctc: nn.Module | None = None


@dataclass
class ExportResult:
    out_dir: Path
    files: list[Path]
    metadata: dict[str, str]
    parity: dict  # name -> parity.ParityReport
    speed: list = field(default_factory=list)  # onnx_speed.SpeedResult of each variant written (ONNX)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.parity.values())


def load_export_source(model: str | Path, with_ctc_head: bool = False) -> ExportSource:
    """An encoder directory ``load_encoder`` reads, a CTC model directory, or ``builtin:NAME``."""
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.models.load import load_encoder

    path = Path(resolve_model_path(str(model))).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a directory (expected a model directory with config.json)")
    is_ctc = (path / CTC_CONFIG).is_file()
    if with_ctc_head and not is_ctc:
        raise ModelLoadError(
            f"{path}: --with-ctc-head needs a CTC model directory (with {CTC_CONFIG}, from `speechdistill "
            "finetune-ctc`); this one has none. Drop --with-ctc-head to export the encoder alone."
        )
    if is_ctc:
        ctc = prepare_frozen(_load_ctc(path))
        if with_ctc_head:
            return ExportSource(path, "ctc", ctc.encoder, ctc)
        log.info("%s is a CTC model; exporting its encoder only (add --with-ctc-head for log-probs)", path)
        return ExportSource(path, "encoder", ctc.encoder)
    return ExportSource(path, "encoder", prepare_frozen(load_encoder(path)))


def _load_ctc(path: Path) -> nn.Module:
    from speechdistill.asr.ctc_model import CTCModel

    try:
        return CTCModel.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, ModelLoadError):
            raise
        raise ModelLoadError(f"{path}: could not load the CTC model: {e}") from None


def frame_rate(encoder: nn.Module) -> float:
    """Frames per second of the encoder's output (50 for the HuBERT/WavLM CNN)."""
    cfg = encoder.config
    if not hasattr(cfg, "conv_stride"):  # GenDistiller keeps its HF front end's config as a dict
        cfg = encoder.config.build_frontend_config()
    stride = 1
    for s in cfg.conv_stride:
        stride *= int(s)
    return SAMPLE_RATE / stride


def provenance(path: Path) -> dict:
    """Teacher and recipe of a distilled student (its ``distill_info.json``), or empty."""
    for cand in (path / DISTILL_INFO, path / "encoder" / DISTILL_INFO):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.warning("%s is unreadable; the export metadata will lack teacher and recipe", cand)
                return {}
    return {}


def export_metadata(source: ExportSource, layers: list[int] | None, opset: int, precision: str) -> dict[str, str]:
    """``metadata_props`` of the ONNX file (and ``export_info.json`` of safetensors exports)."""
    enc = source.encoder
    info = provenance(source.path)
    num_layers = int(enc.num_output_layers)
    if source.kind == "ctc":
        outputs = "log_probs,frame_lengths"
        out_layers = "ctc head over the encoder's layers"
    else:
        outputs = "hidden_states,frame_lengths"
        out_layers = f"last ({num_layers}, final output)" if layers is None else ",".join(map(str, layers))
    recipe = info.get("recipe")
    meta = {
        "sample_rate": str(SAMPLE_RATE),
        "frame_rate": f"{frame_rate(enc):g}",
        "inputs": "waveform[batch,samples] float32 right-padded; lengths[batch] int64",
        "outputs": outputs,
        "output_layers": out_layers,
        "input_normalization": "per-utterance zero mean, unit variance (inside the graph)"
        if enc.normalize else "none",
        "padding": "frames past frame_lengths are padding (undefined values)",
        "model_type": str(getattr(enc.config, "model_type", type(enc).__name__)),
        "hidden_size": str(enc.hidden_size),
        "num_layers": str(num_layers),
        # A name, not this machine's absolute path: the file travels.
        "source": source.path.name,
        "teacher": str(info.get("teacher") or (recipe or {}).get("teacher", "")),
        "recipe": json.dumps(recipe, sort_keys=True) if recipe else "",
        "speechdistill_version": speechdistill.__version__,
        "opset": str(opset),
        "precision": precision,
        "torch_version": torch.__version__,
    }
    if source.kind == "ctc":
        meta["vocab"] = "vocab.json beside this file (id 0 = CTC blank, '|' = word delimiter)"
    return meta


def remove_stale_exports(out_dir: Path, names: Sequence[str]) -> None:
    """Delete earlier export files/folders that would not match the parity report written now."""
    for name in names:
        p = out_dir / name
        if p.exists():
            log.warning("removing %s: it does not match the parity report written now", p)
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
