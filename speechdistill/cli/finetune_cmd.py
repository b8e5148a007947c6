"""``speechdistill finetune-ctc``: train a character CTC model on an encoder (SUPERB ASR protocol)."""

from __future__ import annotations

import argparse
import logging
import sys

from speechdistill.cli.job import Flag, Job, register_job

log = logging.getLogger(__name__)

DESCRIPTION = """\
Fine-tune a character CTC model on an encoder: a learnable weighted sum of all the encoder's hidden
states feeds a head (BiLSTM or linear) and a softmax over characters (SUPERB ASR protocol: frozen
encoder, 2-layer BiLSTM of 1024, greedy decoding: recipe superb_asr).
The vocabulary is built from the training transcripts.

Pipeline-ready models: only a linear head on the last hidden state of a stock HF encoder (HuBERT,
WavLM, wav2vec 2.0, a DistilHuBERT student): recipe hf_ctc. `speechdistill export --format hf-ctc`
turns such a model into a transformers *ForCTC directory that pipeline("automatic-speech-recognition")
runs. Weighted-sum and BiLSTM heads, and GenDistiller or pruned encoders, have no stock transformers
class: use them with `speechdistill evaluate` or export them to ONNX (--with-ctc-head).

Examples:
  speechdistill finetune-ctc --upstream runs/tiny_cpu/model --train data/synth/train.jsonl \\
      --dev data/synth/dev.jsonl --out runs/ctc
  speechdistill finetune-ctc superb_asr ctc.upstream=runs/tiny_cpu/model data.train_manifest=train.jsonl ...
  speechdistill finetune-ctc hf_ctc --upstream builtin:reference --train data/synth/train.jsonl --out runs/hf_ctc
  speechdistill finetune-ctc reference_teacher --train train.jsonl --dev dev.jsonl --out runs/ref_teacher

The best model by dev WER (or the final one without a dev set) is written to OUT/model: evaluate it with
`speechdistill evaluate --model OUT/model --manifest test.jsonl --out OUT/eval`.
"""


def _upstream_config(text: str):
    from speechdistill.asr.ctc_model import parse_upstream_config
    from speechdistill.config import ConfigError

    try:
        return parse_upstream_config(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


FLAGS = [
    Flag("--upstream", "ctc.upstream", "encoder: a model directory, a hub id, builtin:NAME or random:hubert|wavlm|wav2vec2 "
         "(random weights, trained from scratch; implies an unfrozen encoder)", metavar="SPEC", required=True),
    Flag("--upstream-config", "ctc.upstream_config", "for random:FAMILY: HF config keys as key=value,... or a JSON "
         "file; key preset=base|large|tiny picks the starting shape", type=_upstream_config, metavar="SPEC"),
    Flag("--head", "ctc.head.head", "head on the weighted features (linear + --layer-select last: a stock "
         "transformers *ForCTC, see `export --format hf-ctc`)", choices=["linear", "bilstm"]),
    Flag("--lstm-hidden", "ctc.head.lstm_hidden", "BiLSTM units per direction (SUPERB: 1024)", type=int),
    Flag("--lstm-layers", "ctc.head.lstm_layers", "BiLSTM layers", type=int),
    Flag("--layer-select", "ctc.head.layer_select", "learnable weighted sum of all hidden states (SUPERB) or the last one",
         choices=["weighted", "last"]),
    Flag("--unfreeze", "ctc.head.freeze_encoder", "fine-tune the encoder too (default: frozen, SUPERB)", const=False),
    Flag("--train-cnn", "ctc.head.freeze_cnn", "with --unfreeze, train the CNN front end as well", const=False),
    Flag("--encoder-lr-scale", "ctc.encoder_lr_scale", "encoder lr = lr x this when unfrozen", type=float),
    Flag("--specaugment", "ctc.head.specaugment", "time/feature masking of the features in training", const=True),
    Flag("--train", "data.train_manifest", "training manifest (JSONL with transcripts)", metavar="MANIFEST",
         required=True),
    Flag("--dev", "data.dev_manifest", "dev manifest: validation WER/CER, best model kept by dev WER", metavar="MANIFEST"),
    Flag("--out", "out_dir", "output directory", metavar="DIR"),
    Flag("--steps", "train.steps", "optimizer steps", type=int),
    Flag("--lr", "optim.lr", "peak learning rate", type=float),
    Flag("--warmup-ratio", "optim.warmup_ratio", "fraction of steps for linear warm-up", type=float),
    Flag("--max-batch-seconds", "data.max_batch_seconds", "padded audio seconds per batch", type=float),
    Flag("--max-batch-size", "data.max_batch_size", "utterances per batch at most", type=int),
    Flag("--max-seconds", "data.max_seconds", "leave out training utterances longer than this (0 = keep all)", type=float),
    Flag("--grad-accum", "train.grad_accum", "gradient accumulation steps", type=int),
    Flag("--val-every", "train.val_every", "validate every N steps (0: at the end only)", type=int),
    Flag("--save-every", "train.save_every", "checkpoint every N steps (0: at the end only)", type=int),
    Flag("--log-every", "train.log_every", "log the training loss every N steps", type=int),
    Flag("--seed", "train.seed", "random seed", type=int),
    Flag("--mixed-precision", "train.mixed_precision", "autocast mode; the CTC loss is always fp32 (auto: bf16 on "
         "capable GPUs)", choices=["auto", "no", "bf16", "fp16"]),
    Flag("--num-workers", "data.num_workers", "data loader worker processes", type=int),
    Flag("--on-bad-audio", "data.on_bad_audio", "stop on an unreadable/too-short file, or skip it and count it",
         choices=["error", "skip"]),
]


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.run.finetune import run_finetune

    result = run_finetune(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.interrupted:
        return 130
    metrics = {k: v for k, v in result.metrics.items() if k.startswith("dev_")}
    sys.stdout.write(f"CTC model written to {result.artifact}\n")
    if metrics:
        sys.stdout.write("  " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.finetune import FinetuneConfig

    register_job(sub, Job(
        name="finetune-ctc", help="train a character CTC model (ASR) on an encoder", description=DESCRIPTION,
        config_cls=FinetuneConfig, run=run, flags=FLAGS, resumable=True,
    ))
