"""Static (QDQ) int8 for the Conv front end, calibrated on a manifest.

Dynamic quantization computes activation scales at run time, which pays off for the big MatMuls of the
transformer but makes onnxruntime's Conv slower, not faster (espnet_onnx #25; measured here too).  Static
quantization fixes the activation ranges once, from calibration audio, and writes QuantizeLinear /
DequantizeLinear pairs around each Conv (QDQ format) that onnxruntime fuses into integer convolutions.

``quantize_int8_static_conv`` quantizes the Conv ops statically, then the MatMul/Gemm ops dynamically
(the default int8 path), so the result is the dynamic int8 model with an int8 front end.  Whether it is
faster depends on the front end's shape (a thin CNN has little to gain): ``export`` measures it
(``int8_conv: auto`` keeps whichever of the two int8 files is faster).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speechdistill import SAMPLE_RATE

log = logging.getLogger(__name__)


def _reader(input_names: Sequence[str], waves: Sequence[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class ManifestReader(CalibrationDataReader):
        """One utterance per calibration step (batch 1, unpadded), as the model runs at inference."""

        def __init__(self) -> None:
            self._it = iter(waves)

        def get_next(self):
            w = next(self._it, None)
            if w is None:
                return None
            return {input_names[0]: w[None].astype(np.float32), input_names[1]: np.array([len(w)], dtype=np.int64)}

        def rewind(self) -> None:
            self._it = iter(waves)

    return ManifestReader()


def calibration_waves(manifest: str | Path, num_utterances: int = 32, max_seconds: float = 8.0,
                      seed: int = 0) -> list[np.ndarray]:
    """A seeded subset of the manifest's utterances at 16 kHz, cropped to ``max_seconds``."""
    from speechdistill.prune.calib import load_calibration_audio

    return [np.asarray(w, dtype=np.float32) for w in load_calibration_audio(manifest, num_utterances, max_seconds, seed)]


def quantize_int8_static_conv(
    fp32_path: Path, int8_path: Path, waves: Sequence[np.ndarray], matmul_ops: Sequence[str] = ("MatMul", "Gemm"),
) -> None:
    """Conv: static QDQ int8 (per-channel int8 weights, uint8 activations, min/max ranges over ``waves``);
    then ``matmul_ops``: dynamic int8 (``onnx_io.quantize_int8``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from speechdistill.export.onnx_io import _quiet_root_logger, quantize_int8

    if not waves:
        raise ValueError("static int8 needs calibration audio (no utterances given)")
    model = onnx.load(str(fp32_path), load_external_data=False)
    names = [i.name for i in model.graph.input]
    static_path = int8_path.with_name(int8_path.name + ".conv.onnx")
    try:
        with _quiet_root_logger():
            quantize_static(
                str(fp32_path), str(static_path), _reader(names, waves), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            )
        rest = [op for op in matmul_ops if op != "Conv"]
        if rest:
            quantize_int8(static_path, int8_path, rest)
        else:
            static_path.replace(int8_path)
    finally:
        static_path.unlink(missing_ok=True)
    log.info("static int8 Conv calibrated on %d utterances (%.1f s)", len(waves),
             sum(len(w) for w in waves) / SAMPLE_RATE)
