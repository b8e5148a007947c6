"""``export_onnx``: an encoder (or an encoder + CTC head) to ONNX fp32 and int8, with parity checks and speed.

The pieces: ``source`` (what is exported, metadata), ``onnx_graph`` (the traced module, the graph
contract), ``onnx_io`` (files, sessions, dynamic quantization), ``onnx_static`` (static QDQ int8 of the
Conv front end), ``parity`` (the judgement), ``onnx_speed`` (the RTF of every file written).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from speechdistill.errors import OutputError
from speechdistill.export.onnx_graph import (
    DEFAULT_OPSET,
    CTCGraph,
    EncoderGraph,
    parse_outputs,
    reference_runner,
    trace_to_onnx,
)
from speechdistill.export.onnx_io import (
    DEFAULT_INT8_OPS,
    check_onnx,
    load_onnx_session,
    quantize_int8,
    set_onnx_metadata,
)
from speechdistill.export.onnx_speed import SpeedOptions, SpeedResult, onnx_speed, torch_speed
from speechdistill.export.parity import (
    FAILED_PARITY_FILE,
    ParityError,
    ParityOptions,
    ParityReport,
    build_inputs,
    fp32_report,
    int8_report,
    ort_runner,
    parity_options_dict,
    reference_outputs,
    write_parity_json,
)
from speechdistill.export.source import (
    VOCAB_FILES,
    ExportResult,
    ExportSource,
    export_metadata,
    load_export_source,
    remove_stale_exports,
)
from speechdistill.utils.extras import require
from speechdistill.utils.io import make_temp_dir, share_tree, writing
from speechdistill.utils.lock import output_lock

log = logging.getLogger(__name__)

FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
SPEED_FILE = "speed.json"
INT8_CONV_MODES = ("fp32", "static", "auto")


@dataclass
class OnnxExportOptions:
    opset: int = DEFAULT_OPSET
    outputs: str = "last"  # "last", "all", or comma-separated hidden-state indices ("0,4,8")
    int8: bool = False
    int8_op_types: tuple[str, ...] = DEFAULT_INT8_OPS
    with_ctc_head: bool = False
    trace_seconds: float = 1.0  # length of the example input the trace runs (batch of 2)
    parity: ParityOptions = field(default_factory=ParityOptions)
    # Conv ops in the int8 file: "fp32" (dynamic int8 MatMul/Gemm only), "static" (plus static QDQ int8 Conv
    # calibrated on int8_calib_manifest), "auto" (build both, keep the faster as model.int8.onnx).
    int8_conv: str = "fp32"
    int8_calib_manifest: str | None = None  # default: parity.manifest
    int8_calib_utterances: int = 32
    speed: SpeedOptions = field(default_factory=SpeedOptions)


def export_onnx(
    model: str | Path, out_dir: str | Path, options: OnnxExportOptions | None = None
) -> ExportResult:
    """Export and check parity; the files reach ``out_dir`` only when every check passed.

    All or nothing: a failing export (parity, or any error) leaves ``out_dir`` as it was, with the
    last good ``model.onnx`` / ``model.int8.onnx`` and their ``parity.json``; a failed parity check
    writes its report to ``parity.failed.json`` and raises ParityError."""
    options = options or OnnxExportOptions()
    for module in ("onnx", "onnxruntime"):  # before any work: a missing extra is a one-line error
        require(module, "ONNX export")
    source = load_export_source(model, options.with_ctc_head)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"export folder {out_dir} exists and is not a folder; choose another --out")
    source = load_export_source(model, options.with_ctc_head)
    num_states = int(source.encoder.num_output_layers) + 1
    layers = None if source.kind == "ctc" else parse_outputs(options.outputs, num_states)
    if source.kind == "ctc":
        graph: nn.Module = CTCGraph(source.ctc)
        main_output, time_axis = "log_probs", 1
    else:
        graph = EncoderGraph(source.encoder, layers)
        main_output, time_axis = "hidden_states", (1 if layers is None else 2)
    meta = export_metadata(source, layers, options.opset, "fp32")
    meta["exporter"] = "torch.onnx.export TorchScript (dynamo=False)"

    with output_lock(out_dir, "export folder"), writing(out_dir):
        tmp = make_temp_dir(out_dir, ".export-")
        try:
            return _export_staged(source, graph, out_dir, tmp, options, meta, main_output, time_axis, layers)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _export_staged(source, graph, out_dir: Path, tmp: Path, options: OnnxExportOptions, meta: dict,
                   main_output: str, time_axis: int, layers) -> ExportResult:
    """Everything is written into ``tmp``; only a fully passing export is moved into ``out_dir``."""
    reports: dict[str, ParityReport] = {}

    def refuse(message: str) -> ParityError:
        failed = write_parity_json(out_dir, meta, reports, _options_dict(options), name=FAILED_PARITY_FILE)
        return ParityError(f"{message}; {out_dir} is unchanged (report: {failed})")

    fp32_tmp = tmp / FP32_NAME
    log.info("exporting %s (%s) to ONNX opset %d", source.path, source.kind, options.opset)
    trace_to_onnx(graph, fp32_tmp, main_output, time_axis, options.opset, options.trace_seconds)
    set_onnx_metadata(fp32_tmp, meta)
    check_onnx(fp32_tmp)

    inputs = build_inputs(options.parity)
    refs = reference_outputs(reference_runner(source, layers), inputs)
    fp32_session = load_onnx_session(fp32_tmp, options.parity.threads)
    fp32_run = ort_runner(fp32_session)
    reports["fp32"] = fp32_report("onnx-fp32", refs, fp32_run, inputs, time_axis, options.parity)
    if not reports["fp32"].passed:
        raise refuse(f"refusing to write {out_dir / FP32_NAME}: {reports['fp32'].message}")

    staged = [fp32_tmp]
    if source.kind == "ctc":
        for name in VOCAB_FILES:
            if (source.path / name).is_file():
                shutil.copyfile(source.path / name, tmp / name)
                staged.append(tmp / name)
    candidates: list[SpeedResult] = []
    if options.int8:
        int8_tmp = tmp / INT8_NAME
        quantize_int8(fp32_tmp, int8_tmp, options.int8_op_types)
        quantization = "onnxruntime quantize_dynamic, QInt8 weights, ops " + ",".join(options.int8_op_types)
        if options.int8_conv != "fp32":
            int8_tmp, quantization, candidates = _static_conv_int8(fp32_tmp, int8_tmp, tmp, options, quantization)
        meta8 = {**meta, "precision": "int8", "quantization": quantization}
        set_onnx_metadata(int8_tmp, meta8)
        vocab = _load_vocab(source) if source.kind == "ctc" else None
        int8_run = ort_runner(load_onnx_session(int8_tmp, options.parity.threads))
        reports["int8"] = int8_report(refs, int8_run, fp32_run, inputs, time_axis, options.parity, vocab)
        if not reports["int8"].passed:
            raise refuse(f"refusing to write {out_dir / INT8_NAME}: {reports['int8'].message} (the fp32 model passed)")
        staged.append(int8_tmp)
    staged.append(write_parity_json(tmp, meta, reports, _options_dict(options)))
    # Commit: parity.json last, so a kill mid-way never leaves a report newer than its models.
    files = []
    share_tree(tmp)
    for f in staged:
        os.replace(f, out_dir / f.name)
        files.append(out_dir / f.name)
    (out_dir / FAILED_PARITY_FILE).unlink(missing_ok=True)  # an earlier failure's report, now outdated
    if not options.int8:
        remove_stale_exports(out_dir, (INT8_NAME,))  # an older int8 file would not match this fp32 model
    speed: list[SpeedResult] = []
    if options.speed.enabled:
        speed = _measure_speed(source, files, candidates, options.speed)
        files.append(_write_speed_json(out_dir, speed, options.speed))
    return ExportResult(out_dir, files, meta, reports, speed)


def _static_conv_int8(
    fp32: Path, dynamic: Path, tmp: Path, options: OnnxExportOptions, dynamic_desc: str
) -> tuple[Path, str, list[SpeedResult]]:
    """The int8 file with static QDQ Conv (``static``), or the faster of that and the dynamic one (``auto``)."""
    from speechdistill.config import ConfigError
    from speechdistill.export.onnx_static import calibration_waves, quantize_int8_static_conv

    manifest = options.int8_calib_manifest or options.parity.manifest
    if not manifest:
        raise ConfigError("int8_conv=static/auto needs calibration audio: give int8_calib_manifest (or "
                          "--parity-manifest)")
    waves = calibration_waves(manifest, options.int8_calib_utterances, seed=options.parity.seed)
    static_dir = tmp / "static"
    static_dir.mkdir()
    static = static_dir / INT8_NAME
    quantize_int8_static_conv(fp32, static, waves, options.int8_op_types)
    desc = (f"Conv: onnxruntime quantize_static QDQ (per-channel QInt8 weights, QUInt8 activations, MinMax over "
            f"{len(waves)} utterances); {dynamic_desc}")
    if options.int8_conv == "static":
        return static, desc, []
    measured = [onnx_speed(dynamic, "onnx-int8 (dynamic, Conv fp32)", options.speed),
                onnx_speed(static, "onnx-int8 (static QDQ Conv)", options.speed)]
    log.info("int8 candidates: dynamic %.4f RTF, static Conv %.4f RTF (%d threads)", measured[0].rtf,
             measured[1].rtf, options.speed.threads)
    if measured[1].rtf < measured[0].rtf:
        return static, desc, measured
    return dynamic, dynamic_desc, measured


def _measure_speed(source: ExportSource, files: list[Path], candidates: list[SpeedResult],
                   options: SpeedOptions) -> list[SpeedResult]:
    """RTF of the PyTorch source and of every ONNX file written (plus the int8 candidates ``auto`` compared)."""
    module = source.ctc if source.kind == "ctc" else source.encoder
    out = [torch_speed(module, "torch-fp32 (source)", options)]
    for f in files:
        if f.suffix == ".onnx":
            out.append(onnx_speed(f, "onnx-int8" if f.name == INT8_NAME else "onnx-fp32", options))
    out.extend(candidates)
    for r in out:
        log.info("speed %s: RTF %.4f at %d thread(s), %g s input", r.variant, r.rtf, r.threads, r.seconds)
    return out


def _write_speed_json(out_dir: Path, speed: list[SpeedResult], options: SpeedOptions) -> Path:
    from dataclasses import asdict

    from speechdistill.utils.io import atomic_write_json

    path = out_dir / SPEED_FILE
    ref = speed[0].rtf if speed else None
    atomic_write_json(path, {
        "options": asdict(options),
        "note": "RTF = median compute seconds / audio seconds, batch 1; speedup = source PyTorch RTF / RTF "
                "(same process, same threads); indicative on a shared machine",
        "results": [{**r.to_dict(), "speedup_vs_source": (ref / r.rtf) if ref and r.rtf > 0 else None}
                    for r in speed],
    })
    return path


def _load_vocab(source: ExportSource):
    from speechdistill.asr.vocab import CharVocab, VocabError

    try:
        return CharVocab.load(source.path)
    except VocabError as e:
        log.warning("int8 cannot be judged by WER: %s", e)
        return None


def _options_dict(options: OnnxExportOptions) -> dict:
    return {
        **parity_options_dict(options.parity),
        "trace_seconds": options.trace_seconds,
        "outputs": options.outputs,
        "opset": options.opset,
        "int8_op_types": list(options.int8_op_types),
        "int8_conv": options.int8_conv,
        "int8_calib_manifest": options.int8_calib_manifest,
    }
