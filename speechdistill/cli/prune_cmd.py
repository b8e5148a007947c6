"""``speechdistill prune``: retraining-free structured pruning (STAT, STAT without correction, magnitude)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

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
speechdistill.models.load_encoder, usable as a teacher, for CTC fine-tuning, evaluate and export)
and OUT/prune_report.json (per-layer kept heads/neurons, MACs before/after, timings, peak memory).

Example:
  speechdistill prune --method stat --model facebook/hubert-base-ls960 --calib train.jsonl \\
      --keep-macs 0.6 --out runs/hubert_stat60
"""


def keep_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep-macs must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"--keep-macs is the fraction of MACs to keep and must be in (0, 1] (e.g. 0.5), got {value:g}"
        )
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.cli.common import HelpFormatter

    p = sub.add_parser(
        "prune", help="retraining-free structured pruning (STAT / magnitude) to a MAC budget",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    p.add_argument("--method", choices=["stat", "stat-nocorrect", "magnitude"], default="stat",
                   help="pruning method (see above)")
    p.add_argument("--model", required=True,
                   help="encoder to prune: local directory or hub id (HF HuBERT/WavLM/wav2vec2, *ForCTC, or a pruned encoder)")
    p.add_argument("--calib", required=True, help="calibration manifest (JSONL); transcripts are not needed")
    p.add_argument("--keep-macs", type=keep_fraction, required=True,
                   help="fraction of the encoder's MACs to keep, in (0, 1]")
    p.add_argument("--out", required=True, help="output directory for the pruned encoder and prune_report.json")
    p.add_argument("--num-calib", type=int, default=256, help="calibration utterances (seeded random subset)")
    p.add_argument("--max-seconds", type=positive_float, default=20.0,
                   help="crop longer calibration utterances to this many seconds (seeded random window)")
    p.add_argument("--prune-cnn", action="store_true",
                   help="also prune CNN channels of layers 1-6 (group-norm CNNs only, e.g. HuBERT/WavLM Base)")
    p.add_argument("--sketch-rows", type=int, default=4096,
                   help="CountSketch rows per module for the activation matrices (0 = keep every frame; "
                        "use at least the widest FFN, 3072 for Base models)")
    p.add_argument("--error-norm", choices=["residual", "module"], default="residual",
                   help="what a module's error is measured against for the global threshold: the residual "
                        "stream it writes into, or its own output")
    p.add_argument("--min-neurons", type=int, default=8, help="FFN neurons every layer keeps at least")
    p.add_argument("--min-heads", type=int, default=1, help="attention heads every layer keeps at least")
    p.add_argument("--batch-seconds", type=positive_float, default=40.0,
                   help="padded audio seconds per calibration batch")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (unset: torch chooses)")
    p.add_argument("--seed", type=int, default=0, help="seed for the utterance subset, crops and the sketch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from speechdistill.models.load import load_encoder
    from speechdistill.prune.budget import PruneError
    from speechdistill.prune.calib import load_calibration_audio, make_batches, manifest_lengths, num_batches
    from speechdistill.prune.stat import PruneOptions, prune_model
    from speechdistill.utils.io import atomic_write_json

    out = Path(args.out)
    if (out / "config.json").exists() and not args.overwrite:
        raise PruneError(f"{out} already holds a model (config.json); pass --overwrite to replace it")
    if args.sketch_rows < 0:
        raise PruneError(f"--sketch-rows must be >= 0 (0 = exact), got {args.sketch_rows}")
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = load_encoder(args.model)
    opts = PruneOptions(
        prune_cnn=args.prune_cnn, sketch_rows=args.sketch_rows, seed=args.seed, min_heads=args.min_heads,
        min_neurons=args.min_neurons, error_norm=args.error_norm,
    )
    if args.method == "magnitude":
        lengths = manifest_lengths(args.calib, args.num_calib, args.max_seconds, args.seed)
        pruned, report = prune_model(
            encoder, None, args.method, args.keep_macs, options=opts, calib_lengths=lengths, source_model=args.model,
        )
    else:
        log.info("loading %d calibration utterances from %s", args.num_calib, args.calib)
        wavs = load_calibration_audio(args.calib, args.num_calib, args.max_seconds, args.seed)
        pruned, report = prune_model(
            encoder, make_batches(wavs, args.batch_seconds), args.method, args.keep_macs, options=opts,
            source_model=args.model, progress=True, total_batches=num_batches(wavs, args.batch_seconds),
        )
    report["calibration"]["manifest"] = str(args.calib)
    report["threads"] = torch.get_num_threads()
    pruned.save_pretrained(out)
    atomic_write_json(out / "prune_report.json", report)
    heads = [layer["heads_after"] for layer in report["layers"]]
    neurons = [layer["neurons_after"] for layer in report["layers"]]
    print(
        f"{args.method}: kept {report['keep_macs_achieved']:.3f} of MACs (target {args.keep_macs:g}), "
        f"params {report['params_before'] / 1e6:.2f}M -> {report['params_after'] / 1e6:.2f}M\n"
        f"heads per layer: {heads}\nFFN per layer: {neurons}\n"
        + (f"CNN channels: {report['conv_dims']}\n" if args.prune_cnn else "")
        + f"time {report['wall_time_s']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB\n"
        f"pruned encoder: {out}\nreport: {out / 'prune_report.json'}"
    )
    return 0
