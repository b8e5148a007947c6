"""``speechdistill prune``: retraining-free structured pruning (STAT, STAT without correction, magnitude)."""

from __future__ import annotations

import argparse
import sys

from speechdistill.cli.job import Flag, Job, register_job

DESCRIPTION = """\
Prune attention heads and FFN neurons (and optionally CNN channels) of a HuBERT / WavLM /
wav2vec 2.0 encoder, or of an already pruned one, without any training.

Methods:
  stat            STAT (Flynn et al. 2024): calibration activations -> pivoted-QR interpolative
                  decomposition per module; the dropped neurons/heads are re-expressed through the
                  kept ones (W2 <- W2 T^T, W_O corrected by least squares).
  stat-nocorrect  the same selection, weights of kept units copied without the correction.
  magnitude       weight-norm scores (no activations; only the calibration lengths are used).

One global error threshold across all layers is binary-searched so that the pruned encoder keeps
--keep-macs of the encoder's MACs (CNN + transformer, attention's T^2 terms at the calibration
lengths).  Without --prune-cnn the CNN (about a third of HuBERT Base's MACs) is untouched, so very
small --keep-macs values are unreachable; the error message says the reachable minimum.

Writes OUT/ (config.json, model.safetensors, preprocessor_config.json: loadable with
speechdistill.models.load.load_encoder, usable as a teacher, for CTC fine-tuning, evaluate and export)
and OUT/prune_report.json (per-layer kept heads/neurons, MACs before/after, timings, peak memory).

Example:
  speechdistill prune --method stat --model facebook/hubert-base-ls960 --calib train.jsonl \\
      --keep-macs 0.6 --out runs/hubert_stat60
"""

FLAGS = [
    Flag("--method", "method", "pruning method (see above)", choices=["stat", "stat-nocorrect", "magnitude"]),
    Flag("--model", "model", "encoder to prune: local directory or hub id (HF HuBERT/WavLM/wav2vec2, *ForCTC, or a "
         "pruned encoder)", metavar="DIR", required=True),
    Flag("--calib", "calib", "calibration manifest (JSONL); transcripts are not needed", metavar="MANIFEST",
         required=True),
    Flag("--keep-macs", "keep_macs", "fraction of the encoder's MACs to keep, in (0, 1]", type=float),
    Flag("--out", "out", "output directory for the pruned encoder and prune_report.json", metavar="DIR",
         required=True),
    Flag("--num-calib", "num_calib", "calibration utterances (seeded random subset)", type=int),
    Flag("--max-seconds", "max_seconds", "crop longer calibration utterances to this many seconds", type=float),
    Flag("--prune-cnn", "prune_cnn", "also prune CNN channels of layers 1-6 (group-norm CNNs only, e.g. HuBERT/WavLM "
         "Base)", const=True),
    Flag("--cnn-budget", "cnn_budget", "with --prune-cnn: 'search' measures CNN/transformer splits of the budget on "
         "calibration utterances and keeps the best (never worse than transformer-only there); 'global' uses one "
         "error threshold for both", choices=["search", "global"]),
    Flag("--sketch-rows", "sketch_rows", "CountSketch rows per module for the activation matrices (0 = keep every "
         "frame; use at least the widest FFN, 3072 for Base models)", type=int),
    Flag("--error-norm", "error_norm", "what a module's error is measured against for the global threshold: the "
         "residual stream it writes into, or its own output", choices=["residual", "module"]),
    Flag("--min-neurons", "min_neurons", "FFN neurons every layer keeps at least", type=int),
    Flag("--min-heads", "min_heads", "attention heads every layer keeps at least", type=int),
    Flag("--batch-seconds", "batch_seconds", "padded audio seconds per calibration batch", type=float),
    Flag("--threads", "threads", "torch CPU threads (0: torch chooses)", type=int),
    Flag("--seed", "seed", "seed for the utterance subset, crops and the sketch", type=int),
    Flag("--overwrite", "overwrite", "replace the model already in --out (the folder is replaced as a whole)",
         const=True),
]


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.run.prune import format_summary, run_prune

    report = run_prune(cfg)
    sys.stdout.write(format_summary(cfg, report) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.prune import PruneConfig

    register_job(sub, Job(
        name="prune", help="retraining-free structured pruning (STAT / magnitude) to a MAC budget",
        description=DESCRIPTION, config_cls=PruneConfig, run=run, flags=FLAGS,
    ))
