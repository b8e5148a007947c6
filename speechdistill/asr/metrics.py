"""Transcript normalisation and word/character error rates (jiwer does the alignment).

Rates are corpus-level: total edits over total reference words (characters), which is what
LibriSpeech/SUPERB numbers mean, not a mean of per-utterance rates.  Per-utterance counts come from
the same jiwer alignment, so they add up exactly to the corpus totals.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer

# Typographic apostrophes would otherwise become separate vocabulary entries or be stripped.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
# Joiners that separate words ("WELL-KNOWN", "AND/OR"): a space keeps the two words apart.
_WORD_JOINERS = re.compile(r"[-\u2010\u2011\u2012\u2013\u2014/_]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str | None) -> str:
    """Uppercase, punctuation removed except apostrophes, whitespace collapsed.

    Letters (any script) and digits are kept; hyphens, dashes and slashes become spaces; every
    other symbol (including ``|``, ``<`` and ``>``, so they never collide with the CTC vocabulary's
    special tokens) is deleted.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).upper()
    text = _WORD_JOINERS.sub(" ", text)
    kept = [ch if (ch.isalnum() or ch == "'" or ch.isspace()) else "" for ch in text]
    text = "".join(kept)
    # An apostrophe touching no letter on either side is stray punctuation, not part of a word
    # (leading/trailing ones as in 'TIS or SAYIN' are kept: LibriSpeech has them).
    text = re.sub(r"(?<![^\W_])'(?![^\W_])", "", text)
    return _SPACES.sub(" ", text).strip()


@dataclass
class UtteranceErrors:
    """Edit counts of one hypothesis against its reference (after normalisation)."""

    word_errors: int
    ref_words: int
    char_errors: int
    ref_chars: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ErrorRates:
    wer: float
    cer: float
    word_errors: int
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    char_errors: int
    ref_chars: int
    per_utterance: list[UtteranceErrors]

    def summary(self) -> dict[str, float | int]:
        d = asdict(self)
        d.pop("per_utterance")
        return d


def _rate(errors: int, ref: int) -> float:
    # No reference words at all: a perfect (empty) output scores 0, anything else 100%.
    if ref == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / ref


def _per_sentence_errors(output) -> list[int]:
    counts = []
    for chunks in output.alignments:
        n = 0
        for c in chunks:
            if c.type in ("substitute", "delete"):
                n += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                n += c.hyp_end_idx - c.hyp_start_idx
        counts.append(n)
    return counts


def error_rates(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> ErrorRates:
    """Corpus WER and CER (jiwer over the whole lists) plus per-utterance edit counts."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if normalize:
        refs = [normalize_text(r) for r in refs]
        hyps = [normalize_text(h) for h in hyps]
    else:
        refs, hyps = list(refs), list(hyps)
    if not refs:
        return ErrorRates(0.0, 0.0, 0, 0, 0, 0, 0, 0, 0, [])
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    w_err = _per_sentence_errors(words)
    c_err = _per_sentence_errors(chars)
    per_utt = [
        UtteranceErrors(w, len(r.split()), c, len(r)) for w, c, r in zip(w_err, c_err, refs)
    ]
    word_errors = words.substitutions + words.deletions + words.insertions
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    ref_words = words.hits + words.substitutions + words.deletions
    ref_chars = chars.hits + chars.substitutions + chars.deletions
    return ErrorRates(
        wer=_rate(word_errors, ref_words),
        cer=_rate(char_errors, ref_chars),
        word_errors=word_errors,
        ref_words=ref_words,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        char_errors=char_errors,
        ref_chars=ref_chars,
        per_utterance=per_utt,
    )


def wer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    return error_rates(refs, hyps, normalize).wer


def cer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    return error_rates(refs, hyps, normalize).cer
