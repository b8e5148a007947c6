"""ONNX files: metadata, onnxruntime sessions, validation and dynamic int8 quantization."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from speechdistill.models.errors import ModelLoadError
from speechdistill.utils.extras import require

log = logging.getLogger(__name__)

# Only the matrix multiplies are quantized by default: they hold almost all weights (the CNN is ~4% of
# HuBERT Base), and dynamic int8 Conv is often slower in onnxruntime (espnet_onnx #25).
DEFAULT_INT8_OPS = ("MatMul", "Gemm")


def set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    onnx = require("onnx", "ONNX export")

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for k, v in metadata.items():
        if k in existing:
            existing[k].value = v
        else:
            p = model.metadata_props.add()
            p.key, p.value = k, v
    onnx.save(model, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    onnx = require("onnx", "reading ONNX files")

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: ONNX file does not exist")
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable ONNX model ({first_line(e)}); re-export it") from None
    return {p.key: p.value for p in model.metadata_props}


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_onnx_session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session; a missing, truncated or invalid file raises ModelLoadError naming it."""
    ort = require("onnxruntime", "running ONNX models")

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: ONNX file does not exist")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    # onnxruntime's error classes derive from Exception directly.
    load_errors = tuple(
        getattr(ort_errors, n)
        for n in (
            "InvalidProtobuf",
            "Fail",
            "NoSuchFile",
            "InvalidGraph",
            "InvalidArgument",
            "RuntimeException",
            "NotImplemented",
        )
        if hasattr(ort_errors, n)
    )
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except (*load_errors, OSError, RuntimeError) as e:
        raise ModelLoadError(
            f"{path}: onnxruntime cannot load this model ({first_line(e)}); re-export it"
        ) from None


def quantize_int8(fp32_path: Path, int8_path: Path, op_types: Sequence[str] = DEFAULT_INT8_OPS) -> None:
    """Dynamic quantization: int8 weights (per tensor), activations quantized at run time."""
    onnx = require("onnx", "int8 quantization")
    require("onnxruntime", "int8 quantization")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    folded = fold_initializer_identities(model)
    src = fp32_path
    if folded:
        log.debug("int8: %d Identity nodes of shared weights folded before quantization", folded)
        src = int8_path.with_name(int8_path.name + ".prep.onnx")
        onnx.save(model, str(src))
    try:
        with _quiet_root_logger():
            quantize_dynamic(
                str(src), str(int8_path), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types)
            )
    finally:
        if src != fp32_path:
            src.unlink(missing_ok=True)


def fold_initializer_identities(model) -> int:
    """Point consumers of ``Identity(initializer)`` at the initializer itself; returns how many folded.

    Why: the TorchScript exporter gives a weight used several times (GenDistiller's decoder block runs
    once per generation step) one initializer plus ``Identity`` copies, and ``quantize_dynamic`` only
    quantizes MatMuls whose weight IS an initializer, so later steps would stay fp32 and the int8 file
    would keep both the fp32 and the int8 weights.
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return 0

    def rewire(g) -> None:
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in alias:
                    node.input[i] = alias[name]
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    rewire(attr.g)
                for sub in attr.graphs:
                    rewire(sub)

    del graph.node[:]
    graph.node.extend(keep)
    rewire(graph)
    return len(alias)


class _ToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        log.debug("onnxruntime.quantization: %s", record.getMessage())
        return False


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs per-tensor chatter (and a pre-processing hint) on the ROOT logger;
    a filter on the root logger only sees records logged there directly, so ours pass untouched."""
    root = logging.getLogger()
    f = _ToDebug()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def check_onnx(path: Path) -> None:
    onnx = require("onnx", "ONNX export")

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise RuntimeError(f"{path}: the exporter wrote an invalid ONNX model: {first_line(e)}") from None
