"""``speechdistill export``: ONNX (fp32, optional int8), safetensors, or a stock transformers ``*ForCTC``
directory (``hf-ctc``), each kept only if parity passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from speechdistill.config import ConfigError
from speechdistill.export.onnx_speed import SpeedOptions
from speechdistill.export.parity import ParityOptions

MIN_OPSET, MAX_OPSET = 14, 20  # SDPA needs 14; the TorchScript exporter in torch 2.13 stops at 20
INT8_OP_TYPES = ("MatMul", "Gemm", "Conv")
MAX_INPUT_SECONDS = 120.0  # trace and random parity inputs: attention memory grows with the square


@dataclass
class ExportConfig:
    # Encoder directory (anything load_encoder reads, or builtin:NAME), or a CTC model directory.
    model: str = ""
    # hf-ctc: a CTC model with a linear head on a stock HF encoder -> a *ForCTC directory for transformers'
    # ASR pipeline (export/hf_ctc.py).
    format: Literal["onnx", "safetensors", "hf-ctc"] = "onnx"
    out: str = ""
    int8: bool = False  # ONNX only: also write model.int8.onnx
    # ONNX op types quantized with int8 (MatMul,Gemm = transformer and projections; Conv = the CNN).
    int8_ops: list[str] = field(default_factory=lambda: ["MatMul", "Gemm"])
    # Conv ops of the int8 file: fp32 (default), static (QDQ int8 calibrated on int8_calib_manifest, default
    # parity.manifest), or auto (build both int8 files, keep the faster at speed.threads).
    int8_conv: Literal["fp32", "static", "auto"] = "fp32"
    int8_calib_manifest: str = ""
    int8_calib_utterances: int = 32
    with_ctc_head: bool = False
    opset: int = 17
    outputs: str = "last"  # last | all | comma-separated hidden-state indices
    trace_seconds: float = 1.0
    parity: ParityOptions = field(default_factory=ParityOptions)
    # The RTF of every ONNX file written (and of the PyTorch source) is measured and saved to speed.json.
    speed: SpeedOptions = field(default_factory=SpeedOptions)

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model is required (--model DIR)")
        if not self.out:
            raise ConfigError("out is required (--out DIR)")
        if self.format != "onnx" and self.int8:
            raise ConfigError(f"--int8 applies to --format onnx only ({self.format} exports are fp32 checkpoints)")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(f"--opset {self.opset} is outside the supported {MIN_OPSET}..{MAX_OPSET}")
        if not 0.1 <= self.trace_seconds <= MAX_INPUT_SECONDS:
            raise ConfigError(f"--trace-seconds {self.trace_seconds:g} must be in [0.1, {MAX_INPUT_SECONDS:g}]")
        if max(self.parity.lengths_s) > MAX_INPUT_SECONDS:
            raise ConfigError(
                f"--parity-lengths {','.join(f'{s:g}' for s in self.parity.lengths_s)}: each at most "
                f"{MAX_INPUT_SECONDS:g} s (longer random inputs only cost memory)"
            )
        if self.int8_conv != "fp32" and not self.int8:
            raise ConfigError(f"int8_conv={self.int8_conv} applies to the int8 file: add --int8")
        if self.int8_conv != "fp32" and "Conv" in self.int8_ops:
            raise ConfigError("int8_conv=static/auto quantizes Conv statically: drop Conv from --int8-ops "
                              "(dynamic int8 Conv)")
        if self.int8_conv != "fp32" and not (self.int8_calib_manifest or self.parity.manifest):
            raise ConfigError("int8_conv=static/auto needs calibration audio: --int8-calib-manifest MANIFEST "
                              "(or --parity-manifest)")
        if self.int8_calib_utterances < 1:
            raise ConfigError("int8_calib_utterances must be >= 1")
        unknown = [op for op in self.int8_ops if op not in INT8_OP_TYPES]
        if unknown or (self.int8 and not self.int8_ops):
            raise ConfigError(
                f"--int8-ops {','.join(self.int8_ops) or '(empty)'}: unknown op type(s) {', '.join(unknown) or '-'}; "
                f"choose from {', '.join(INT8_OP_TYPES)}"
            )


def run_export(cfg: ExportConfig):
    """Export and check parity; raises ParityError (after writing parity.json) on a failed check."""
    if cfg.format == "onnx":
        from speechdistill.export.onnx_export import OnnxExportOptions, export_onnx

        options = OnnxExportOptions(
            opset=cfg.opset, outputs=cfg.outputs, int8=cfg.int8, int8_op_types=tuple(cfg.int8_ops),
            with_ctc_head=cfg.with_ctc_head, trace_seconds=cfg.trace_seconds, parity=cfg.parity,
            int8_conv=cfg.int8_conv, int8_calib_manifest=cfg.int8_calib_manifest or None,
            int8_calib_utterances=cfg.int8_calib_utterances, speed=cfg.speed,
        )
        return export_onnx(cfg.model, cfg.out, options)
    if cfg.format == "hf-ctc":
        from speechdistill.export.hf_ctc import export_hf_ctc

        return export_hf_ctc(cfg.model, cfg.out, cfg.parity)
    from speechdistill.export.safetensors_export import SafetensorsExportOptions, export_safetensors

    return export_safetensors(
        cfg.model, cfg.out, SafetensorsExportOptions(with_ctc_head=cfg.with_ctc_head, parity=cfg.parity)
    )
