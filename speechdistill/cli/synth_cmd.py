"""``speechdistill data synth``: the offline synthetic corpus (registered under ``speechdistill data``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from speechdistill.data.synth.text import TEXT_MODES

log = logging.getLogger(__name__)

DESCRIPTION = """\
Synthesise a multi-speaker English speech corpus offline with eSpeak NG (the library shipped in the
espeakng-loader wheel: pip install 'speechdistill[tts]'). Speakers are fixed combinations of an English
voice (en, en-us, en-gb-x-rp, en-029, en-gb-scotland, ...), a voice variant (m1..m8, f1..f5, ...) and
base pitch, pitch range and rate; every utterance jitters rate and pitch around its speaker's base.

Text: 'sentences' (a small grammar over a built-in word list, 4-14 words) or 'digits' (TIDIGITS-like
connected digit strings of 1-7 digits). Transcripts are upper case, LibriSpeech style.

Writes OUT/wav/SPEAKER/*.wav (16 kHz, 16-bit), OUT/train.jsonl, OUT/dev.jsonl, OUT/test.jsonl
(speaker-disjoint) and OUT/speakers.json. The same --seed gives byte-identical files whatever
--num-workers is.

  speechdistill data synth --out corpus/synth --hours 1 --seed 0
  speechdistill data synth --out corpus/digits --hours 0.5 --text digits --test-utterances 400 --test-speakers 8
"""


def register(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from speechdistill.cli.common import HelpFormatter

    p = data_subparsers.add_parser(
        "synth",
        help="synthesise an offline multi-speaker English corpus with eSpeak NG",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder (created; must not already hold a corpus)")
    p.add_argument(
        "--hours",
        type=float,
        required=True,
        help="total audio to generate in hours; stops at the first utterance that reaches it",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument(
        "--text",
        choices=TEXT_MODES,
        default="sentences",
        help="'sentences': grammar sentences of 4-14 words; 'digits': connected digit strings",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="synthesis processes; None = one per CPU. Does not change the output",
    )
    p.add_argument(
        "--num-speakers",
        type=int,
        default=None,
        help="speakers in total over all splits; None = 50 per hour, at least 10, at most 500",
    )
    p.add_argument("--dev-fraction", type=float, default=0.1, help="fraction of speakers held out for dev")
    p.add_argument("--test-fraction", type=float, default=0.1, help="fraction of speakers held out for test")
    p.add_argument(
        "--test-utterances",
        type=int,
        default=None,
        help="a fixed-size test split of exactly this many utterances (then --hours counts train + dev only); "
        "comparisons want >= 400 (`speechdistill compare`)",
    )
    p.add_argument(
        "--test-speakers",
        type=int,
        default=None,
        help="held-out test speakers (added to the default speaker count); None = --test-fraction of them",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the wav/ folder, manifests and speakers.json already in --out",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from speechdistill.data.synth.corpus import synthesize_corpus

    summary = synthesize_corpus(
        args.out, args.hours, seed=args.seed, text=args.text, num_workers=args.num_workers,
        num_speakers=args.num_speakers, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
        overwrite=args.overwrite, progress=not args.no_progress,
        test_utterances=args.test_utterances, test_speakers=args.test_speakers,
    )
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0
