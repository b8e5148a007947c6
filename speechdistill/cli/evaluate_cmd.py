"""``speechdistill evaluate``: WER/CER and real-time factor of a CTC model on a manifest."""

from __future__ import annotations

import argparse
import sys

from speechdistill.cli.job import Flag, Job, register_job

DESCRIPTION = """\
Decode a manifest with a CTC model (from `speechdistill finetune-ctc`) using greedy CTC decoding
(no language model, as in SUPERB) or, with --lm, beam search with a word n-gram LM (ARPA or KenLM
binary; optional extra: pip install 'speechdistill[lm]'), normalise reference and hypothesis
(uppercase, punctuation removed except apostrophes) and score corpus-level WER and CER with jiwer.

Writes OUT/report.json (wer, cer, num_utterances, audio_hours, params, MACs per second of audio,
rtf with the thread count, decoding, skipped files) and OUT/hypotheses.jsonl (id, ref, hyp,
per-utterance error counts). RTF = model compute (forward + decoding) seconds / audio seconds, after
one warm-up forward, audio loading excluded.
Utterances longer than --max-seconds (default 60) are decoded in chunks of that length (their
log-probs joined before decoding), or refused / skipped with --on-long-audio error|skip: attention
grows with the square of the length, so an hour-long file would need tens of GB at once.

An exported ONNX CTC model (`speechdistill export --with-ctc-head`, model.onnx or model.int8.onnx with
vocab.json beside it) is scored the same way on onnxruntime (--threads = its intra-op threads): the WER,
CER and RTF of the file that ships.

Examples:
  speechdistill evaluate --model runs/ctc/model --manifest test_clean.jsonl --out runs/ctc/eval --threads 2
  speechdistill evaluate --model export/asr/model.int8.onnx --manifest test_clean.jsonl --out eval_int8 --threads 2
  speechdistill evaluate --model runs/ctc/model --manifest test_clean.jsonl --out runs/ctc/eval_lm \\
      --lm lm.arpa --lm-weight 0.5 --word-score 0      (tune both on a dev manifest, not on test)
"""


FLAGS = [
    Flag("--model", "model", "CTC model directory (OUT/model of finetune-ctc), or an exported ONNX CTC model "
         "(export --with-ctc-head; fp32 or int8, vocab.json beside it)", metavar="DIR|FILE.onnx", required=True),
    Flag("--manifest", "manifest", "manifest (JSONL) with reference transcripts", metavar="MANIFEST", required=True),
    Flag("--out", "out", "directory for report.json and hypotheses.jsonl", metavar="DIR", required=True),
    Flag("--threads", "threads", "torch CPU threads during evaluation (0: torch's current setting)", type=int),
    Flag("--on-bad-audio", "on_bad_audio", "stop on an unreadable/too-short file, or skip it and count it in the report",
         choices=["error", "skip"]),
    Flag("--device", "device", "cpu, cuda, cuda:N or auto"),
    Flag("--batch-size", "batch_size", "utterances per batch (0: 1 on CPU so padding does not inflate RTF, 16 on GPU)",
         type=int),
    Flag("--max-batch-seconds", "max_batch_seconds", "padded audio seconds per batch at most", type=float),
    Flag("--max-seconds", "max_seconds", "longest utterance decoded in one piece, in seconds (0: no limit)", type=float),
    Flag("--on-long-audio", "on_long_audio", "utterances longer than --max-seconds: decode in chunks, stop with an "
         "error naming the file, or skip and list them in the report", choices=["chunk", "error", "skip"]),
    Flag("--lm", "lm.path", "word n-gram LM (ARPA or KenLM binary) for beam search; none: greedy decoding",
         metavar="FILE"),
    Flag("--lexicon", "lm.lexicon", "words the beam search may output, one per line (none: the ARPA file's unigrams)",
         metavar="FILE"),
    Flag("--lm-weight", "lm.weight", "LM weight in the beam search", type=float),
    Flag("--word-score", "lm.word_score", "score added per word in the beam search", type=float),
    Flag("--beam-size", "lm.beam_size", "beam size", type=int),
]


def run(cfg, args: argparse.Namespace) -> int:
    from speechdistill.asr.evaluate import format_report
    from speechdistill.run.evaluate import run_evaluate

    report = run_evaluate(cfg)
    sys.stdout.write(format_report(report) + f"\nreport: {cfg.out}/report.json\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from speechdistill.run.evaluate import EvaluateConfig

    register_job(sub, Job(
        name="evaluate", help="WER/CER and real-time factor of a CTC model on a manifest", description=DESCRIPTION,
        config_cls=EvaluateConfig, run=run, flags=FLAGS,
    ))
