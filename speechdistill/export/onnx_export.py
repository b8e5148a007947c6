"""``export_onnx``: an encoder (or an encoder + CTC head) to ONNX fp32 and dynamic int8, with parity checks.

The pieces: ``source`` (what is exported, metadata), ``onnx_graph`` (the traced module, the graph
contract), ``onnx_io`` (files, sessions, quantization), ``parity`` (the judgement).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

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
from speechdistill.export.parity import (
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

log = logging.getLogger(__name__)

FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"


@dataclass
class OnnxExportOptions:
    opset: int = DEFAULT_OPSET
    outputs: str = "last"  # "last", "all", or comma-separated hidden-state indices ("0,4,8")
    int8: bool = False
    int8_op_types: tuple[str, ...] = DEFAULT_INT8_OPS
    with_ctc_head: bool = False
    trace_seconds: float = 1.0  # length of the example input the trace runs (batch of 2)
    parity: ParityOptions = field(default_factory=ParityOptions)


def export_onnx(
    model: str | Path, out_dir: str | Path, options: OnnxExportOptions | None = None
) -> ExportResult:
    """Export, check parity, and keep only files that passed; raises ParityError (after writing
    ``parity.json``) when fp32 or int8 parity fails."""
    options = options or OnnxExportOptions()
    for module in ("onnx", "onnxruntime"):  # before any work: a missing extra is a one-line error
        require(module, "ONNX export")
    source = load_export_source(model, options.with_ctc_head)
    out_dir = Path(out_dir)
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

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    reports: dict[str, ParityReport] = {}
    try:
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
            write_parity_json(out_dir, meta, reports, _options_dict(options))
            remove_stale_exports(out_dir, (FP32_NAME, INT8_NAME))
            raise ParityError(f"refusing to write {out_dir / FP32_NAME}: {reports['fp32'].message}")

        files = [out_dir / FP32_NAME]
        shutil.move(str(fp32_tmp), files[0])
        if source.kind == "ctc":
            for name in VOCAB_FILES:
                if (source.path / name).is_file():
                    shutil.copyfile(source.path / name, out_dir / name)
                    files.append(out_dir / name)
        if options.int8:
            int8_tmp = tmp / INT8_NAME
            quantize_int8(files[0], int8_tmp, options.int8_op_types)
            meta8 = {
                **meta,
                "precision": "int8",
                "quantization": "onnxruntime quantize_dynamic, QInt8 weights, ops "
                + ",".join(options.int8_op_types),
            }
            set_onnx_metadata(int8_tmp, meta8)
            vocab = _load_vocab(source) if source.kind == "ctc" else None
            int8_run = ort_runner(load_onnx_session(int8_tmp, options.parity.threads))
            reports["int8"] = int8_report(refs, int8_run, fp32_run, inputs, time_axis, options.parity, vocab)
            if not reports["int8"].passed:
                write_parity_json(out_dir, meta, reports, _options_dict(options))
                remove_stale_exports(out_dir, (INT8_NAME,))
                raise ParityError(
                    f"refusing to write {out_dir / INT8_NAME}: {reports['int8'].message} "
                    f"(the fp32 model {files[0]} passed and was kept)"
                )
            shutil.move(str(int8_tmp), out_dir / INT8_NAME)
            files.append(out_dir / INT8_NAME)
        else:
            remove_stale_exports(out_dir, (INT8_NAME,))  # a stale int8 file would not match this fp32 model
        files.append(write_parity_json(out_dir, meta, reports, _options_dict(options)))
        return ExportResult(out_dir, files, meta, reports)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    }
