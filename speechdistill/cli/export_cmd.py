"""``speechdistill export``: ONNX (fp32, optional int8) or safetensors, kept only if parity passes."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 14, 20  # SDPA needs 14; the TorchScript exporter in torch 2.13 stops at 20

DESCRIPTION = """\
Export an encoder (any directory `load_encoder` reads: stock HF HuBERT/WavLM/wav2vec2 students such
as DistilHuBERT, GenDistiller, pruned encoders; or builtin:NAME) or, with --with-ctc-head, a CTC model
directory (from `speechdistill finetune-ctc`, has ctc_config.json) for edge inference.

--format onnx writes OUT/model.onnx (fp32) and with --int8 OUT/model.int8.onnx (onnxruntime dynamic
quantization, QInt8 weights). Inputs: waveform [batch, samples] float32 (16 kHz mono, right-padded)
and lengths [batch] int64; outputs: hidden_states (--outputs last: [batch, frames, hidden]; all or a
list: [batch, layers, frames, hidden]) or, with the CTC head, log_probs [batch, frames, vocab]; plus
frame_lengths [batch] int64. Batch and time axes are dynamic; waveform normalisation (if the model
uses it) is inside the graph. Exporter: torch.onnx TorchScript (dynamo=False), default opset 17.
Group-norm CNNs (HuBERT Base) are exported with a masked group norm, exact on padded batches.
Metadata (sample_rate, frame_rate, output_layers, source/teacher, recipe, version, opset,
precision) is stored in the file's metadata_props.

--format safetensors writes an HF-style directory (config.json, model.safetensors,
preprocessor_config.json): a DistilHuBERT student loads with stock transformers.HubertModel.

Parity: the export is compared with the PyTorch model on random inputs of lengths the export never
saw (--parity-lengths, alone and as one padded batch) and on --parity-manifest utterances: fp32 must
satisfy max|export - pytorch| <= tolerance * max|pytorch| + atol on every case. int8 is judged by
the WER increase over fp32 (greedy CTC, --wer-utterances whole manifest utterances) when the CTC head
is exported and the manifest has transcripts; otherwise its relative error and cosine similarity are
reported only. Results go to OUT/parity.json.
A model that fails parity is not written (and stale model files in OUT are removed); exit status 1.

Examples:
  speechdistill export --model runs/distilhubert/student --format onnx --int8 --out export/dh
  speechdistill export --model runs/asr/model --with-ctc-head --int8 --parity-manifest dev.jsonl \\
      --out export/asr
  speechdistill export --model runs/distilhubert/student --format safetensors --out export/dh_hf
"""


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive seconds, got {text!r}")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export to ONNX (fp32/int8) or safetensors, with parity checks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        help="encoder directory (or builtin:NAME), or a CTC model directory with --with-ctc-head",
    )
    p.add_argument(
        "--format", choices=["onnx", "safetensors"], default="onnx", help="output format (default onnx)"
    )
    p.add_argument("--out", required=True, help="output directory (model files and parity.json)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only: also write model.int8.onnx (dynamic quantization, QInt8 weights)",
    )
    p.add_argument(
        "--int8-ops",
        default="MatMul,Gemm",
        help="ONNX op types to quantize with --int8 (default MatMul,Gemm: the transformer and "
        "projections; add Conv to quantize the CNN too)",
    )
    p.add_argument(
        "--with-ctc-head",
        action="store_true",
        help="export the CTC model (encoder + layer weights + head): outputs log_probs + frame_lengths",
    )
    p.add_argument("--opset", type=int, default=17, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default 17)")
    p.add_argument(
        "--outputs",
        default="last",
        help="encoder outputs: 'last' (final output), 'all' (every hidden state stacked, index 0 = "
        "input to the first layer) or comma-separated hidden-state indices, e.g. 0,4,8 (default last)",
    )
    p.add_argument(
        "--trace-seconds",
        type=float,
        default=1.0,
        help="length of the example input used to trace the export (default 1.0)",
    )
    p.add_argument(
        "--parity-manifest",
        default=None,
        help="manifest (JSONL) of real utterances for the parity check; transcripts enable the int8 "
        "WER check with --with-ctc-head",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="fp32 parity: allowed max abs error as a fraction of max|pytorch output| (default 1e-4)",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=1e-6,
        help="fp32 parity: absolute error floor added to the relative bound (default 1e-6)",
    )
    p.add_argument(
        "--parity-lengths",
        type=_floats,
        default=(0.7, 2.3, 4.0),
        help="seconds of the random parity inputs, comma-separated (default 0.7,2.3,4)",
    )
    p.add_argument(
        "--parity-max-utterances", type=int, default=4, help="manifest utterances used for parity (default 4)"
    )
    p.add_argument(
        "--parity-max-seconds",
        type=float,
        default=20.0,
        help="manifest utterances are cut to this many seconds for parity (default 20)",
    )
    p.add_argument(
        "--int8-max-wer-increase",
        type=float,
        default=0.02,
        help="int8 with CTC head: allowed absolute WER increase over fp32 (default 0.02 = 2 points)",
    )
    p.add_argument(
        "--wer-utterances",
        type=int,
        default=200,
        help="int8 with CTC head: manifest utterances (with text, whole) decoded for the WER check "
        "(default 200)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads for the parity runs (default 0 = onnxruntime's choice)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random parity inputs (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from speechdistill.config import ConfigError
    from speechdistill.export.parity import ParityError, ParityOptions

    if args.format == "safetensors" and args.int8:
        raise ConfigError("--int8 applies to --format onnx only (safetensors exports are fp32 checkpoints)")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise ConfigError(f"--opset {args.opset} is outside the supported {MIN_OPSET}..{MAX_OPSET}")
    if args.tolerance < 0 or args.atol < 0:
        raise ConfigError("--tolerance and --atol must be >= 0")
    if args.trace_seconds < 0.1:
        raise ConfigError("--trace-seconds must be at least 0.1")
    parity = ParityOptions(
        rtol=args.tolerance,
        atol=args.atol,
        lengths_s=tuple(args.parity_lengths),
        seed=args.seed,
        manifest=args.parity_manifest,
        max_utterances=args.parity_max_utterances,
        max_seconds=args.parity_max_seconds,
        int8_max_wer_increase=args.int8_max_wer_increase,
        wer_utterances=args.wer_utterances,
        threads=args.threads,
    )
    try:
        if args.format == "onnx":
            from speechdistill.export.onnx_export import OnnxExportOptions, export_onnx

            ops = tuple(s.strip() for s in args.int8_ops.split(",") if s.strip())
            options = OnnxExportOptions(
                opset=args.opset,
                outputs=args.outputs,
                int8=args.int8,
                int8_op_types=ops,
                with_ctc_head=args.with_ctc_head,
                trace_seconds=args.trace_seconds,
                parity=parity,
            )
            result = export_onnx(args.model, args.out, options)
        else:
            from speechdistill.export.safetensors_export import SafetensorsExportOptions, export_safetensors

            result = export_safetensors(
                args.model,
                args.out,
                SafetensorsExportOptions(with_ctc_head=args.with_ctc_head, parity=parity),
            )
    except ParityError as e:
        log.error("%s", e)
        log.error("details: %s/parity.json", args.out)
        return 1
    for name, report in result.parity.items():
        print(f"{name}: {report.message}")
    for f in result.files:
        print(f"wrote {f}")
    return 0
