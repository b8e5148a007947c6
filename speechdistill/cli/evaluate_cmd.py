"""``speechdistill evaluate``: WER/CER and real-time factor of a CTC model on a manifest."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

DESCRIPTION = """\
Decode a manifest with a CTC model (from `speechdistill finetune-ctc`) using greedy CTC decoding
(no language model, as in SUPERB), normalise reference and hypothesis (uppercase, punctuation
removed except apostrophes) and score corpus-level WER and CER with jiwer.

Writes OUT/report.json (wer, cer, num_utterances, audio_hours, params, rtf with the thread count,
skipped files) and OUT/hypotheses.jsonl (id, ref, hyp, per-utterance error counts).
RTF = model compute seconds / audio seconds, after one warm-up forward, audio loading excluded.

Example:
  speechdistill evaluate --model runs/asr/model --manifest test_clean.jsonl --out runs/asr/eval --threads 2
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="WER/CER and real-time factor of a CTC model on a manifest",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="CTC model directory (OUT/model of finetune-ctc)")
    p.add_argument("--manifest", required=True, help="manifest (JSONL) with reference transcripts")
    p.add_argument("--out", required=True, help="directory for report.json and hypotheses.jsonl")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads during evaluation (default: torch's current setting)")
    p.add_argument("--on-bad-audio", choices=["error", "skip"], default="error",
                   help="stop on an unreadable/too-short file, or skip it and count it in the report (default error)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="utterances per batch (default 1 on CPU so padding does not inflate RTF, 16 on GPU)")
    p.add_argument("--max-batch-seconds", type=float, default=120.0, help="padded audio seconds per batch at most (default 120)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from speechdistill.asr.evaluate import evaluate_model, format_report

    report = evaluate_model(
        args.model, args.manifest, args.out, threads=args.threads, max_batch_seconds=args.max_batch_seconds,
        max_batch_size=args.batch_size, on_bad_audio=args.on_bad_audio, device=args.device,
    )
    print(format_report(report))
    print(f"report: {args.out}/report.json")
    return 0
