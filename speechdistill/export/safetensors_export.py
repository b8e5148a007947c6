"""Export a model as a plain safetensors directory that loads without this project where possible.

- HF-family encoders (a DistilHuBERT student is a stock 2-layer ``HubertModel``): ``config.json`` +
  ``model.safetensors`` + ``preprocessor_config.json`` (sampling rate and ``do_normalize``), loadable
  with stock ``transformers.HubertModel.from_pretrained`` (``WavLMModel`` / ``Wav2Vec2Model`` likewise).
- Project encoders (GenDistiller, pruned encoders): their ``save_pretrained`` directory (config.json +
  model.safetensors); loading needs ``speechdistill.models.load.load_encoder``.
- ``with_ctc_head``: the CTC model directory (``encoder/``, ``ctc_head.safetensors``,
  ``ctc_config.json``, ``vocab.json``), loadable with ``CTCModel.from_pretrained``.

The config is written for inference: eval mode, ``layerdrop`` 0.  Every export is re-loaded from
the written files (with the stock class for HF families) and compared with the source model on the
same inputs as the ONNX parity check; a failing export is not kept.  ``export_info.json`` holds the
same metadata as the ONNX files' ``metadata_props``, and ``parity.json`` the check.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from speechdistill.errors import OutputError
from speechdistill.export.onnx_export import ExportResult
from speechdistill.export.onnx_graph import reference_runner
from speechdistill.export.parity import (
    FAILED_PARITY_FILE,
    ParityError,
    ParityOptions,
    build_inputs,
    fp32_report,
    parity_options_dict,
    reference_outputs,
    write_parity_json,
)
from speechdistill.export.source import (
    CTC_CONFIG,
    ExportSource,
    export_metadata,
    load_export_source,
    remove_stale_exports,
)
from speechdistill.models.encoder import HFEncoder
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.hf import FAMILIES, family_of, wants_normalized_input
from speechdistill.models.weights import load_pretrained
from speechdistill.utils.io import atomic_write_json, make_temp_dir, replace_dir, share_tree, writing
from speechdistill.utils.lock import output_lock

log = logging.getLogger(__name__)

INFO_FILE = "export_info.json"
# Names an export may write; on a failed export these are removed from --out so the directory never
# holds a model that disagrees with its parity.json.
ENCODER_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "preprocessor_config.json",
    "generation_config.json",
)
CTC_FILES = ("encoder", "ctc_head.safetensors", CTC_CONFIG, "vocab.json", "vocab_meta.json")


@dataclass
class SafetensorsExportOptions:
    with_ctc_head: bool = False
    parity: ParityOptions = field(default_factory=ParityOptions)


def save_encoder(encoder: nn.Module, out_dir: Path) -> None:
    if not hasattr(encoder, "save_pretrained"):
        raise ModelLoadError(
            f"{type(encoder).__name__} has no save_pretrained(); cannot export it as safetensors"
        )
    encoder.save_pretrained(str(out_dir))
    if not list(out_dir.glob("*.safetensors")):
        raise RuntimeError(
            f"{out_dir}: save_pretrained wrote no .safetensors file ({sorted(os.listdir(out_dir))})"
        )


def reload_encoder(out_dir: Path, like: nn.Module) -> nn.Module:
    """Load the written directory the way a user without this project would, where that is possible."""
    if isinstance(like, HFEncoder):
        cfg = like.config
        _, stock_cls = FAMILIES[family_of(cfg)]
        model = load_pretrained(stock_cls, out_dir).eval()  # the stock transformers class, loaded strictly
        return HFEncoder(model, normalize=wants_normalized_input(out_dir, model.config))
    from speechdistill.models.load import load_encoder

    return load_encoder(out_dir).eval()


def _all_layers_runner(encoder: nn.Module):
    @torch.no_grad()
    def run(wav: torch.Tensor, lengths: torch.Tensor):
        out = encoder.encode(wav, lengths)
        states = list(out.hidden_states)
        if out.last_hidden_state is not None:
            states.append(out.last_hidden_state)
        return torch.stack(states, dim=1), out.frame_lengths.long()

    return run


def _ctc_runner(ctc: nn.Module):
    @torch.no_grad()
    def run(wav: torch.Tensor, lengths: torch.Tensor):
        log_probs, fl = ctc(wav, lengths)
        return log_probs, fl.long()

    return run


def _move_contents(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    moved = []
    for child in sorted(src.iterdir()):
        target = dst / child.name
        if child.is_dir():
            replace_dir(child, target)  # the old folder goes only after the new one is in place
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(child, target)
        moved.append(target)
    return moved


def export_safetensors(
    model: str | Path, out_dir: str | Path, options: SafetensorsExportOptions | None = None
) -> ExportResult:
    """Write the directory, re-load it, compare with the source; only a passing export reaches
    ``out_dir``.  A failure leaves ``out_dir`` as it was (the last good export and its parity.json),
    writes ``parity.failed.json`` and raises ParityError."""
    options = options or SafetensorsExportOptions()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"export folder {out_dir} exists and is not a folder; choose another --out")
    source: ExportSource = load_export_source(model, options.with_ctc_head)
    meta = export_metadata(source, None, 0, "fp32")
    meta.pop("opset")
    meta.update(
        {
            "format": "safetensors",
            "outputs": "log_probs,frame_lengths"
            if source.kind == "ctc"
            else "EncoderOutput (every hidden state)",
            "output_layers": "all",
        }
    )
    with output_lock(out_dir, "export folder"), writing(out_dir):
        tmp = make_temp_dir(out_dir, ".export-")
        try:
            return _export_staged(source, out_dir, tmp, options, meta)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _export_staged(source: ExportSource, out_dir: Path, tmp: Path, options: SafetensorsExportOptions,
                   meta: dict) -> ExportResult:
    staged = tmp / "model"
    if source.kind == "ctc":
        source.ctc.save_pretrained(staged)
        from speechdistill.asr.ctc_model import CTCModel

        reloaded_run = _ctc_runner(CTCModel.from_pretrained(staged).eval())
        ref_run = reference_runner(source, None)
        stale = CTC_FILES
    else:
        staged.mkdir()
        save_encoder(source.encoder, staged)
        reloaded = reload_encoder(staged, source.encoder)
        reloaded_run, ref_run = _all_layers_runner(reloaded), _all_layers_runner(source.encoder)
        stale = ENCODER_FILES
        meta["loads_with"] = (
            f"transformers.{type(reloaded.model).__name__}.from_pretrained"
            if isinstance(reloaded, HFEncoder)
            else "speechdistill.models.load.load_encoder"
        )
    inputs = build_inputs(options.parity)
    refs = reference_outputs(ref_run, inputs)
    time_axis = 1 if source.kind == "ctc" else 2
    report = fp32_report("safetensors", refs, reloaded_run, inputs, time_axis, options.parity)
    opts = parity_options_dict(options.parity)
    if not report.passed:
        failed = write_parity_json(out_dir, meta, {"safetensors": report}, opts, name=FAILED_PARITY_FILE)
        raise ParityError(
            f"refusing to write {out_dir}: the re-loaded export differs from the source: {report.message}; "
            f"{out_dir} is unchanged (report: {failed})"
        )
    atomic_write_json(staged / INFO_FILE, meta)
    write_parity_json(staged, meta, {"safetensors": report}, opts)
    share_tree(staged)
    # Files of an earlier export this one does not write (e.g. its ctc_head after an encoder-only export).
    remove_stale_exports(out_dir, [n for n in (*stale, INFO_FILE) if not (staged / n).exists()])
    files = _move_contents(staged, out_dir)
    (out_dir / FAILED_PARITY_FILE).unlink(missing_ok=True)
    return ExportResult(out_dir, files, meta, {"safetensors": report})
