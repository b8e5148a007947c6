"""``speechdistill export``: ONNX (fp32/int8), safetensors or a transformers *ForCTC directory, kept only if
parity passes."""

from __future__ import annotations

import argparse
import logging
import sys

from speechdistill.cli.job import Flag, Job, comma_floats, comma_list, register_job

log = logging.getLogger(__name__)

DESCRIPTION = """\
Export an encoder (any directory `load_encoder` reads: stock HF HuBERT/WavLM/wav2vec2 students such
as DistilHuBERT, GenDistiller, pruned encoders; or builtin:NAME) or, with --with-ctc-head, a CTC model
directory (from `speechdistill finetune-ctc`, has ctc_config.json) for edge inference.

--format onnx writes OUT/model.onnx (fp32) and with --int8 OUT/model.int8.onnx (onnxruntime dynamic
quantization of MatMul/Gemm, QInt8 weights; --int8-conv static adds static QDQ int8 Conv calibrated on a
manifest, --int8-conv auto builds both and keeps the faster). The RTF of the PyTorch source and of
every file written is measured (--speed-threads, --speed-seconds) and saved to OUT/speed.json.
Inputs: waveform [batch, samples] float32 (16 kHz mono, right-padded) and lengths [batch] int64; outputs: hidden_states (--outputs last: [batch, frames, hidden]; all or a
list: [batch, layers, frames, hidden]) or, with the CTC head, log_probs [batch, frames, vocab]; plus
frame_lengths [batch] int64. Batch and time axes are dynamic; waveform normalisation (if the model
uses it) is inside the graph. Exporter: torch.onnx TorchScript (dynamo=False), default opset 17.
Group-norm CNNs (HuBERT Base) are exported with a masked group norm, exact on padded batches.
Metadata (sample_rate, frame_rate, output_layers, source/teacher, recipe, version, opset,
precision) is stored in the file's metadata_props.

--format safetensors writes an HF-style directory (config.json, model.safetensors,
preprocessor_config.json): a DistilHuBERT student loads with stock transformers.HubertModel.

--format hf-ctc writes a CTC model with a linear head on the last layer of a stock HF encoder
(finetune-ctc recipe hf_ctc) as a transformers *ForCTC directory with tokenizer and feature-extractor
files: pipeline("automatic-speech-recognition", model=OUT) and Wav2Vec2Processor use it as it is.
Other CTC heads are refused with the reason (they have no stock transformers class).

Parity: the export is compared with the PyTorch model on random inputs of lengths the export never
saw (--parity-lengths, alone and as one padded batch) and on --parity-manifest utterances: fp32 must
satisfy max|export - pytorch| <= tolerance * max|pytorch| + atol on every case. int8 is judged by
the WER increase over fp32 (greedy CTC, --wer-utterances whole manifest utterances) when the CTC head
is exported and the manifest has transcripts; otherwise its relative error and cosine similarity are
reported only. Results go to OUT/parity.json.
A model that fails parity is not written: OUT keeps the last good export and its parity.json, the
failed check's report goes to OUT/parity.failed.json; exit status 1.

Examples (the --model paths are what `speechdistill distill tiny_cpu`, `finetune-ctc` and
`finetune-ctc hf_ctc` write with their default out_dir):
  speechdistill export --model runs/tiny_cpu/model --format onnx --int8 --out export/tiny_cpu
  speechdistill export --model runs/ctc/model --with-ctc-head --int8 --parity-manifest data/synth/dev.jsonl \\
      --out export/ctc
  speechdistill export --model runs/tiny_cpu/model --format safetensors --out export/tiny_cpu_hf
  speechdistill export --model runs/hf_ctc/model --format hf-ctc --out export/hf_ctc
"""


FLAGS = [
    Flag("--model", "model", "encoder directory (or builtin:NAME), or a CTC model directory with --with-ctc-head "
         "or --format hf-ctc", metavar="DIR", required=True),
    Flag("--format", "format", "output format", choices=["onnx", "safetensors", "hf-ctc"]),
    Flag("--out", "out", "output directory (model files and parity.json)", metavar="DIR", required=True),
    Flag("--int8", "int8", "ONNX only: also write model.int8.onnx (dynamic quantization, QInt8 weights)", const=True),
    Flag("--int8-ops", "int8_ops", "ONNX op types to quantize with --int8, comma-separated (MatMul,Gemm: the "
         "transformer and projections; add Conv to quantize the CNN too)", type=comma_list, metavar="OPS"),
    Flag("--int8-conv", "int8_conv", "Conv ops in the int8 file: fp32, static (QDQ int8 calibrated on "
         "--int8-calib-manifest) or auto (the faster of the two, measured)", choices=["fp32", "static", "auto"]),
    Flag("--int8-calib-manifest", "int8_calib_manifest", "manifest (JSONL) of calibration audio for static int8 "
         "(when not given: the --parity-manifest)", metavar="MANIFEST"),
    Flag("--speed-threads", "speed.threads", "threads for the RTF measurement of every file written", type=int),
    Flag("--speed-seconds", "speed.seconds", "input length (s) of the RTF measurement", type=float),
    Flag("--no-speed", "speed.enabled", "skip the RTF measurement", const=False),
    Flag("--with-ctc-head", "with_ctc_head", "export the CTC model (encoder + layer weights + head): outputs "
         "log_probs + frame_lengths", const=True),
    Flag("--opset", "opset", "ONNX opset, 14..20", type=int),
    Flag("--outputs", "outputs", "encoder outputs: 'last' (final output), 'all' (every hidden state stacked, index "
         "0 = input to the first layer) or comma-separated hidden-state indices, e.g. 0,4,8"),
    Flag("--trace-seconds", "trace_seconds", "length of the example input used to trace the export", type=float),
    Flag("--parity-manifest", "parity.manifest", "manifest (JSONL) of real utterances for the parity check; "
         "transcripts enable the int8 WER check with --with-ctc-head", metavar="MANIFEST"),
    Flag("--tolerance", "parity.rtol", "fp32 parity: allowed max abs error as a fraction of max|pytorch output|",
         type=float),
    Flag("--atol", "parity.atol", "fp32 parity: absolute error floor added to the relative bound", type=float),
    Flag("--parity-lengths", "parity.lengths_s", "seconds of the random parity inputs, comma-separated",
         type=comma_floats, metavar="S,S,..."),
    Flag("--parity-max-utterances", "parity.max_utterances", "manifest utterances used for parity", type=int),
    Flag("--parity-max-seconds", "parity.max_seconds", "manifest utterances are cut to this many seconds for parity",
         type=float),
    Flag("--int8-max-wer-increase", "parity.int8_max_wer_increase", "int8 with CTC head: allowed absolute WER "
         "increase over fp32 (0.02 = 2 points)", type=float),
    Flag("--wer-utterances", "parity.wer_utterances", "int8 with CTC head: manifest utterances (with text, whole) "
         "decoded for the WER check", type=int),
    Flag("--threads", "parity.threads", "onnxruntime intra-op threads for the parity runs (0 = onnxruntime's choice)",
         type=int),
    Flag("--seed", "parity.seed", "seed of the random parity inputs", type=int),
]


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.export.parity import ParityError
    from speechdistill.run.export import run_export

    try:
        result = run_export(cfg)
    except ParityError as e:
        log.error("%s", e)
        return e.exit_code
    for name, report in result.parity.items():
        sys.stdout.write(f"{name}: {report.message}\n")
    if result.speed:
        from speechdistill.export.onnx_speed import format_speed

        sys.stdout.write(format_speed(result.speed) + "\n")
    for f in result.files:
        sys.stdout.write(f"wrote {f}\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.export import ExportConfig

    register_job(sub, Job(
        name="export", help="export to ONNX (fp32/int8), safetensors or transformers *ForCTC, with parity checks",
        description=DESCRIPTION, config_cls=ExportConfig, run=run, flags=FLAGS,
    ))
