"""Export an encoder (or an encoder + CTC head) to ONNX, fp32 and dynamic int8, with parity checks.

Graph contract (every exported file):

- inputs ``waveform`` [batch, samples] float32 (16 kHz mono, right-padded with zeros) and ``lengths``
  [batch] int64 (valid samples per row).  Waveform normalisation, when the model wants it, is inside
  the graph, per utterance over its valid samples, so callers feed raw audio.
- outputs ``hidden_states`` and ``frame_lengths`` [batch] int64 for an encoder, or ``log_probs``
  [batch, frames, vocab] and ``frame_lengths`` with the CTC head.  ``hidden_states`` is
  [batch, frames, hidden] for ``outputs="last"`` (the model's final output; for stable-layer-norm models
  that is after the final LayerNorm, like HF's ``last_hidden_state``) or [batch, layers, frames, hidden]
  for ``"all"`` / a list of hidden-state indices (index 0 = the input to the first layer).
- batch and time axes are dynamic; frames past ``frame_lengths`` are padding and undefined.

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), opset 17 by default.  In
torch 2.13 it still exists (deprecated), exports these models in about a second, and maps
``dynamic_axes`` straight onto the symbolic batch/time dimensions.  The tracer records only what runs,
so the example input is a padded batch of two (the frame mask is then always part of the graph) and
the parity check runs lengths and batch shapes the trace never saw, which catches anything frozen by
mistake.  The dynamo exporter (``dynamo=True`` + ``dynamic_shapes``) is not used: tried on torch 2.13 it
stops with ``GuardOnDataDependentSymNode`` at ``hf_encode``'s ``bool(fmask.all())`` (is the batch
padded?), which the TorchScript tracer simply records as taken, and it needs ~15 s for a tiny model.

Padded batches with group-norm CNNs (HuBERT Base): the project runs such CNNs per utterance (the first
conv layer's GroupNorm normalises each channel over time, so padding would change every frame).  A
per-utterance loop is not traceable, so while tracing ``hf_encode``'s CNN is swapped for a batched
version whose first GroupNorm uses each utterance's valid conv frames only (masked group norm).  Later
conv layers are local, and a valid output frame only reads valid input frames, so the valid frames
equal the per-utterance result exactly for any batch; parity checks this on padded batches.
Layer-norm CNNs are batched as in PyTorch.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import speechdistill
from speechdistill import SAMPLE_RATE
from speechdistill.config import ConfigError
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
from speechdistill.models.encoder import EncoderOutput
from speechdistill.models.frames import config_output_lengths, conv_output_lengths
from speechdistill.models.teacher import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
CTC_CONFIG = "ctc_config.json"
VOCAB_FILES = ("vocab.json", "vocab_meta.json")
# Only the matrix multiplies are quantized by default: they hold almost all weights (the CNN is ~4% of
# HuBERT Base), and leaving the waveform convolutions in fp32 keeps the group norm input exact.
DEFAULT_INT8_OPS = ("MatMul", "Gemm")


@dataclass
class OnnxExportOptions:
    opset: int = DEFAULT_OPSET
    outputs: str = "last"  # "last", "all", or comma-separated hidden-state indices ("0,4,8")
    int8: bool = False
    int8_op_types: tuple[str, ...] = DEFAULT_INT8_OPS
    with_ctc_head: bool = False
    trace_seconds: float = 1.0  # length of the example input the trace runs (batch of 2)
    parity: ParityOptions = field(default_factory=ParityOptions)


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
    parity: dict[str, ParityReport]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.parity.values())


# -- loading --------------------------------------------------------------------------------------


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
        ctc = _load_ctc(path)
        prepare_for_export(ctc)
        if with_ctc_head:
            return ExportSource(path, "ctc", ctc.encoder, ctc)
        log.info("%s is a CTC model; exporting its encoder only (add --with-ctc-head for log-probs)", path)
        return ExportSource(path, "encoder", prepare_for_export(ctc.encoder))
    return ExportSource(path, "encoder", prepare_for_export(load_encoder(path)))


def _load_ctc(path: Path) -> nn.Module:
    try:
        from speechdistill.asr.ctc_model import CTCModel
    except ImportError as e:
        raise ModelLoadError(f"{path}: CTC models need speechdistill.asr.ctc_model ({e})") from None
    try:
        return CTCModel.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, ModelLoadError):
            raise
        raise ModelLoadError(f"{path}: could not load the CTC model: {e}") from None


def prepare_for_export(module: nn.Module) -> nn.Module:
    """Eval mode (no dropout, no SpecAugment masking) and layerdrop 0 everywhere, no gradients."""
    for m in module.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and getattr(cfg, "layerdrop", 0.0):
            cfg.layerdrop = 0.0
    module.eval()
    module.requires_grad_(False)
    return module


def encoder_config(encoder: nn.Module):
    return getattr(encoder, "config", None)


# -- traceable forward ----------------------------------------------------------------------------


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, lengths: torch.Tensor) -> torch.Tensor:
    """``norm(x[b, :, :lengths[b]])`` for every row at once: statistics over valid frames only."""
    B, C, T = x.shape
    G = norm.num_groups
    valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    xg = x.reshape(B, G, C // G, T)
    m = valid[:, None, None, :]
    count = m.sum(-1, keepdim=True).clamp(min=1.0) * (C // G)
    mean = (xg * m).sum((-2, -1), keepdim=True) / count
    var = (((xg - mean) * m) ** 2).sum((-2, -1), keepdim=True) / count
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(B, C, T)
    if norm.affine:
        y = y * norm.weight[None, :, None] + norm.bias[None, :, None]
    return y


def batched_cnn_features(
    model: nn.Module, wav: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder.cnn_features`` without the per-utterance loop: the whole padded batch at once, with the
    first layer's GroupNorm restricted to each utterance's valid frames.  Valid frames are exact."""
    cfg = model.config
    h = wav[:, None]
    for i, layer in enumerate(model.feature_extractor.conv_layers):
        if i == 0 and cfg.feat_extract_norm == "group":
            h = layer.conv(h)
            first_lengths = conv_output_lengths(lengths, cfg.conv_kernel[:1], cfg.conv_stride[:1])
            h = layer.activation(masked_group_norm(h, layer.layer_norm, first_lengths))
        else:
            h = layer(h)
    return h.transpose(1, 2), config_output_lengths(cfg, lengths).long()


@contextmanager
def traceable_frontends() -> Iterator[None]:
    """While tracing, route ``hf_encode``'s CNN (HF encoders, GenDistiller's front end, any project
    encoder built on ``hf_encode``) through ``batched_cnn_features``.

    Why a scoped swap of the module function: the per-utterance loop in ``cnn_features`` would be
    unrolled for the example batch, and this keeps one exact formulation for every encoder type
    without a second copy of each model's ``encode``.  The rest of ``hf_encode`` is traceable as long
    as the example batch is padded (then the frame mask is always passed; see ``trace_to_onnx``).
    """
    from speechdistill.models import encoder as encoder_module

    if not hasattr(encoder_module, "cnn_features"):
        raise RuntimeError("speechdistill.models.encoder.cnn_features is gone; update traceable_frontends()")
    original = encoder_module.cnn_features
    encoder_module.cnn_features = batched_cnn_features
    try:
        yield
    finally:
        encoder_module.cnn_features = original


def make_traceable(encoder: nn.Module) -> nn.Module:
    """The encoder whose ``encode`` is traced: a project encoder may offer ``traceable_encoder()``
    returning a trace-friendly twin; otherwise its own ``encode`` runs under ``traceable_frontends``.
    The parity check on unseen lengths and padded batches is what proves the graph right."""
    twin = getattr(encoder, "traceable_encoder", None)
    return twin() if callable(twin) else encoder


def parse_outputs(spec: str, num_hidden_states: int) -> list[int] | None:
    """``"last"`` -> None; ``"all"`` -> every index; ``"0,4,8"`` -> those (negative ones count from the
    end)."""
    spec = spec.strip().lower()
    if spec == "last":
        return None
    if spec == "all":
        return list(range(num_hidden_states))
    try:
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--outputs must be 'last', 'all' or comma-separated layer indices, got {spec!r}"
        ) from None
    if not idx:
        raise ConfigError("--outputs lists no layers")
    out = []
    for i in idx:
        j = i + num_hidden_states if i < 0 else i
        if not 0 <= j < num_hidden_states:
            raise ConfigError(
                f"--outputs layer {i} is out of range: the model has hidden states 0..{num_hidden_states - 1}"
            )
        out.append(j)
    return out


def select_output(out: EncoderOutput, layers: list[int] | None) -> torch.Tensor:
    if layers is None:
        return out.last_hidden_state if out.last_hidden_state is not None else out.hidden_states[-1]
    return torch.stack([out.hidden_states[i] for i in layers], dim=1)


class EncoderGraph(nn.Module):
    """(waveform, lengths) -> (hidden_states, frame_lengths): the module the exporter traces."""

    def __init__(self, encoder: nn.Module, layers: list[int] | None):
        super().__init__()
        self.encoder = make_traceable(encoder)
        self.layers = layers

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder.encode(waveform, lengths)
        return select_output(out, self.layers), out.frame_lengths.long()


class CTCGraph(nn.Module):
    """(waveform, lengths) -> (log_probs, frame_lengths) through the CTC model."""

    def __init__(self, ctc: nn.Module):
        super().__init__()
        self.ctc = ctc

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, frame_lengths = self.ctc(waveform, lengths)
        return log_probs, frame_lengths.long()


def reference_runner(source: ExportSource, layers: list[int] | None):
    """The ORIGINAL PyTorch computation (per-utterance group-norm CNN, etc.) the export must match."""

    @torch.no_grad()
    def run(wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if source.ctc is not None:
            log_probs, fl = source.ctc(wav, lengths)
            return log_probs, fl.long()
        out = source.encoder.encode(wav, lengths)
        return select_output(out, layers), out.frame_lengths.long()

    return run


# -- metadata -------------------------------------------------------------------------------------


def _config_value(cfg, *keys: str) -> str:
    if cfg is None:
        return ""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    for k in keys:
        v = d.get(k)
        if v not in (None, "", [], {}):
            return str(v)
    return ""


def frame_rate(cfg) -> float:
    strides = getattr(cfg, "conv_stride", None)
    if strides is None:  # project models keep their HF front end's config as a dict (GenDistiller)
        strides = (getattr(cfg, "frontend_config", None) or {}).get("conv_stride", (5, 2, 2, 2, 2, 2, 2))
    stride = 1
    for s in strides:
        stride *= int(s)
    return SAMPLE_RATE / stride


def wants_normalization(encoder: nn.Module) -> bool:
    for obj in (encoder, encoder_config(encoder)):
        for name in ("normalize", "normalize_input", "normalize_waveform", "do_normalize"):
            v = getattr(obj, name, None)
            if isinstance(v, bool):
                return v
    return False


def _distill_info(path: Path) -> dict:
    """The distillation record a student directory carries (teacher, recipe), if any."""
    for cand in (path / "distill_info.json", path / "encoder" / "distill_info.json"):
        if cand.is_file():
            try:
                return json.loads(cand.read_text())
            except (OSError, ValueError):
                return {}
    return {}


def export_metadata(
    source: ExportSource, layers: list[int] | None, opset: int, precision: str
) -> dict[str, str]:
    """``metadata_props`` of the ONNX file (and ``export_info.json`` of safetensors exports)."""
    enc = source.encoder
    cfg = encoder_config(enc)
    info = _distill_info(source.path)
    num_layers = int(getattr(enc, "num_output_layers", 0) or 0)
    if source.kind == "ctc":
        outputs = "log_probs,frame_lengths"
        out_layers = "ctc head over the encoder's layers"
    else:
        outputs = "hidden_states,frame_lengths"
        out_layers = f"last ({num_layers}, final output)" if layers is None else ",".join(map(str, layers))
    meta = {
        "sample_rate": str(SAMPLE_RATE),
        "frame_rate": f"{frame_rate(cfg):g}",
        "inputs": "waveform[batch,samples] float32 right-padded; lengths[batch] int64",
        "outputs": outputs,
        "output_layers": out_layers,
        "input_normalization": "per-utterance zero mean, unit variance (inside the graph)"
        if wants_normalization(enc)
        else "none",
        "padding": "frames past frame_lengths are padding (undefined values)",
        "model_type": str(getattr(cfg, "model_type", type(enc).__name__)),
        "hidden_size": str(getattr(enc, "hidden_size", "")),
        "num_layers": str(num_layers),
        "source": str(source.path.resolve()),
        "teacher": _config_value(cfg, "teacher", "teacher_name", "teacher_source", "teacher_model")
        or str(info.get("teacher") or (info.get("recipe") or {}).get("teacher", "")),
        "recipe": _config_value(cfg, "recipe", "recipe_name", "speechdistill_recipe")
        or (json.dumps(info["recipe"], sort_keys=True) if info.get("recipe") else ""),
        "speechdistill_version": speechdistill.__version__,
        "opset": str(opset),
        "precision": precision,
        "torch_version": torch.__version__,
    }
    if source.kind == "ctc":
        meta["vocab"] = "vocab.json beside this file (id 0 = CTC blank, '|' = word delimiter)"
    return meta


def set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

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
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: ONNX file does not exist")
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable ONNX model ({_first_line(e)}); re-export it") from None
    return {p.key: p.value for p in model.metadata_props}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_onnx_session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session; a missing, truncated or invalid file raises ModelLoadError naming it."""
    import onnxruntime as ort

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
            f"{path}: onnxruntime cannot load this model ({_first_line(e)}); re-export it"
        ) from None


# -- export ---------------------------------------------------------------------------------------


def trace_to_onnx(
    graph: nn.Module,
    path: Path,
    main_output: str,
    time_axis: int,
    opset: int = DEFAULT_OPSET,
    trace_seconds: float = 1.0,
) -> None:
    """TorchScript-export ``graph(waveform, lengths) -> (main_output, frame_lengths)`` with dynamic batch
    and time axes (``time_axis`` = the frame axis of the main output)."""
    # torch.onnx.export puts the top module back in the mode it found it in, recursively: a fresh wrapper
    # module is in training mode, which would switch dropout back on in the model after export.
    graph.eval()
    n = int(trace_seconds * SAMPLE_RATE)
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, n, generator=g)
    # Unequal lengths, so any mistake that bakes "no padding" into the graph shows up in parity.
    lengths = torch.tensor([n, int(n * 0.8)], dtype=torch.long)
    wav[1, int(lengths[1]) :] = 0
    dynamic_axes = {
        "waveform": {0: "batch", 1: "samples"},
        "lengths": {0: "batch"},
        main_output: {0: "batch", time_axis: "frames"},
        "frame_lengths": {0: "batch"},
    }
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), traceable_frontends():
        warnings.simplefilter("always")
        torch.onnx.export(
            graph,
            (wav, lengths),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["waveform", "lengths"],
            output_names=[main_output, "frame_lengths"],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    # Tracer warnings here come from shape checks in transformers' mask code that hold for any input;
    # the parity check on unseen lengths is the real test, so they are only logged.
    for w in caught:
        log.debug("export warning: %s", str(w.message).splitlines()[0])


def quantize_int8(fp32_path: Path, int8_path: Path, op_types: Sequence[str] = DEFAULT_INT8_OPS) -> None:
    """Dynamic quantization: int8 weights (per tensor), activations quantized at run time."""
    import onnx
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


def export_onnx(
    model: str | Path, out_dir: str | Path, options: OnnxExportOptions | None = None
) -> ExportResult:
    """Export, check parity, and keep only files that passed; raises ParityError (after writing
    ``parity.json``) when fp32 or int8 parity fails."""
    options = options or OnnxExportOptions()
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
        _check_onnx(fp32_tmp)

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


def _check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise RuntimeError(f"{path}: the exporter wrote an invalid ONNX model: {_first_line(e)}") from None


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
