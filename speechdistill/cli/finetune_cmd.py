"""``speechdistill finetune-ctc``: train a character CTC model on any encoder (SUPERB ASR protocol)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import yaml

log = logging.getLogger(__name__)

DESCRIPTION = """\
Fine-tune a character CTC model on an encoder: a learnable weighted sum of all the encoder's hidden
states feeds a head (BiLSTM or linear) and a softmax over characters (SUPERB ASR protocol: frozen
encoder, 2-layer BiLSTM of 1024, greedy decoding; pass --lstm-hidden 1024 for the exact head).
The vocabulary is built from the --train transcripts.

Examples:
  speechdistill finetune-ctc --upstream runs/student/model --train train.jsonl --dev dev.jsonl --out runs/asr
  speechdistill finetune-ctc --upstream random:hubert --upstream-config preset=base \\
      --train train.jsonl --dev dev.jsonl --out runs/ref_teacher --steps 20000 --lr 5e-4

The best model by dev WER (or the final one without --dev) is written to OUT/model: evaluate it with
`speechdistill evaluate --model OUT/model --manifest test.jsonl --out OUT/eval`.
"""

OVERRIDES_HELP = (
    "extra config as key=value (dotted, YAML values), applied after the options above, e.g. "
    "ctc.head.dropout=0.1 optim.schedule=cosine data.max_seconds=20 train.mixed_precision=bf16"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune-ctc", help="train a character CTC model (ASR) on an encoder",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--upstream", help="encoder: a model directory, a hub id, or random:hubert|wavlm|wav2vec2 "
                   "(random weights, trained from scratch; implies --unfreeze)")
    g.add_argument("--upstream-config", help="for random:FAMILY: HF config keys as key=value,... or a JSON file; "
                   "key preset=base|large|tiny picks the starting shape (default base)")
    g.add_argument("--head", choices=["linear", "bilstm"], help="head on the weighted features (default bilstm)")
    g.add_argument("--lstm-hidden", type=int, help="BiLSTM units per direction (SUPERB: 1024; default 256)")
    g.add_argument("--lstm-layers", type=int, help="BiLSTM layers (default 2)")
    g.add_argument("--layer-select", choices=["weighted", "last"],
                   help="learnable weighted sum of all hidden states (SUPERB) or the last one (default weighted)")
    g.add_argument("--unfreeze", action="store_true", help="fine-tune the encoder too (default: frozen, SUPERB)")
    g.add_argument("--train-cnn", action="store_true", help="with --unfreeze, train the CNN front end as well")
    g.add_argument("--encoder-lr-scale", type=float, help="encoder lr = lr x this when unfrozen (default 1.0)")
    g.add_argument("--specaugment", action="store_true", help="time/feature masking of the features in training")
    g = p.add_argument_group("data and training")
    g.add_argument("--train", help="training manifest (JSONL with transcripts)")
    g.add_argument("--dev", help="dev manifest: validation WER/CER, best model kept by dev WER")
    g.add_argument("--out", help="output directory (default runs/ctc)")
    g.add_argument("--steps", type=int, help="optimizer steps (default 1000)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 1e-4, as SUPERB ASR)")
    g.add_argument("--warmup-ratio", type=float, help="fraction of steps for linear warm-up (default 0.1)")
    g.add_argument("--max-batch-seconds", type=float, help="padded audio seconds per batch (default 60)")
    g.add_argument("--max-batch-size", type=int, help="utterances per batch at most (default 32)")
    g.add_argument("--max-seconds", type=float, help="leave out training utterances longer than this (0 = keep all)")
    g.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default 1)")
    g.add_argument("--val-every", type=int, help="validate every N steps (default 0: at the end only)")
    g.add_argument("--save-every", type=int, help="checkpoint every N steps (default 0: at the end only)")
    g.add_argument("--log-every", type=int, help="log training loss every N steps (default 10)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"],
                   help="autocast mode; the CTC loss is always fp32 (default auto: bf16 on capable GPUs)")
    g.add_argument("--num-workers", type=int, help="data loader worker processes (default 0)")
    g.add_argument("--on-bad-audio", choices=["error", "skip"],
                   help="stop on an unreadable/too-short file, or skip it and count it (default error)")
    p.add_argument("--config", help="YAML file with a full or partial config (sections ctc, data, optim, train)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=run)


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    node = d
    *parents, last = dotted.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value


def args_to_dict(args: argparse.Namespace) -> dict[str, Any]:
    """Config dict from --config, then the options given, then key=value overrides."""
    from speechdistill.asr.ctc_model import parse_upstream_config
    from speechdistill.config import deep_merge, load_yaml_dict, parse_overrides

    data: dict[str, Any] = load_yaml_dict(args.config) if args.config else {}
    given: dict[str, Any] = {}
    mapping = {
        "upstream": "ctc.upstream", "head": "ctc.head.head", "lstm_hidden": "ctc.head.lstm_hidden",
        "lstm_layers": "ctc.head.lstm_layers", "layer_select": "ctc.head.layer_select",
        "encoder_lr_scale": "ctc.encoder_lr_scale", "train": "data.train_manifest", "dev": "data.dev_manifest",
        "out": "out_dir", "steps": "train.steps", "lr": "optim.lr", "warmup_ratio": "optim.warmup_ratio",
        "max_batch_seconds": "data.max_batch_seconds", "max_batch_size": "data.max_batch_size",
        "max_seconds": "data.max_seconds", "grad_accum": "train.grad_accum", "val_every": "train.val_every",
        "save_every": "train.save_every", "log_every": "train.log_every", "seed": "train.seed",
        "mixed_precision": "train.mixed_precision", "num_workers": "data.num_workers",
        "on_bad_audio": "data.on_bad_audio",
    }
    for attr, key in mapping.items():
        value = getattr(args, attr)
        if value is not None:
            _set(given, key, value)
    if args.upstream_config:
        _set(given, "ctc.upstream_config", parse_upstream_config(args.upstream_config))
    if args.unfreeze:
        _set(given, "ctc.head.freeze_encoder", False)
    if args.train_cnn:
        _set(given, "ctc.head.freeze_cnn", False)
    if args.specaugment:
        _set(given, "ctc.head.specaugment", True)
    data = deep_merge(data, given)
    return deep_merge(data, parse_overrides(args.overrides))


def run(args: argparse.Namespace) -> int:
    from speechdistill.config import to_dict
    from speechdistill.methods.ctc import finetune_config_from_dict, run_finetune

    cfg = finetune_config_from_dict(args_to_dict(args))
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    result = run_finetune(cfg, resume=args.resume)
    if result.interrupted:
        return 130
    metrics = {k: v for k, v in result.metrics.items() if k.startswith("dev_")}
    print(f"CTC model written to {result.artifact}")
    if metrics:
        print("  " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0
