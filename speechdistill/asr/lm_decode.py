"""Beam-search CTC decoding with a word n-gram language model (optional extra ``lm``).

The decoder is flashlight-text's lexicon decoder with its KenLM binding: the decoder torchaudio's
``ctc_decoder`` wraps, without torchaudio (which this project never installs).  pyctcdecode is not
used: it pins ``numpy<2`` and would downgrade numpy.

- LM: an ARPA file or a KenLM binary of **words**.  Make a small one from a text file with KenLM's
  ``lmplz -o 3 --discount_fallback < text.txt > lm.arpa`` (``bench/build_kenlm.sh`` builds ``lmplz``
  from the kenlm source package), or bring one (LibriSpeech's official 3-/4-gram LMs are ARPA files).
- Words the decoder may output: ``lexicon`` (one word per line; extra columns, e.g. a flashlight
  lexicon's spelling, are ignored) or, by default, the ARPA file's unigrams.  Each word is spelled
  with the CTC vocabulary (its normalised characters; the word delimiter ``|`` is the silence token
  between words); words with characters outside the vocabulary are left out (logged).
- Scores: ``weight`` x LM log-probability + ``word_score`` per word (an insertion bonus or penalty);
  tune both on a dev set, never on the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from speechdistill.asr.metrics import normalize_text
from speechdistill.asr.vocab import CharVocab
from speechdistill.config import ConfigError
from speechdistill.utils.extras import require

log = logging.getLogger(__name__)

ARPA_SPECIAL = {"<s>", "</s>", "<unk>", "<UNK>"}
UNK_WORD = "<unk>"


@dataclass
class LMConfig:
    path: str = ""  # ARPA or KenLM binary (word n-grams); empty = greedy decoding, no LM
    lexicon: str = ""  # words the decoder may output, one per line; empty = the ARPA file's unigrams
    weight: float = 0.5  # LM weight
    word_score: float = 0.0  # added per emitted word (positive favours more words)
    beam_size: int = 50
    beam_threshold: float = 25.0  # prune hypotheses this far below the best

    def validate(self) -> None:
        if not self.path:
            return
        if not Path(self.path).is_file():
            raise ConfigError(f"lm.path: {self.path} does not exist")
        if self.lexicon and not Path(self.lexicon).is_file():
            raise ConfigError(f"lm.lexicon: {self.lexicon} does not exist")
        if self.beam_size < 1 or self.beam_threshold <= 0:
            raise ConfigError("lm.beam_size must be >= 1 and lm.beam_threshold > 0")


def arpa_unigrams(path: str | Path) -> list[str]:
    """The words of an ARPA file's ``\\1-grams:`` section (sentence markers and <unk> left out)."""
    words: list[str] = []
    in_unigrams = False
    with open(path, encoding="utf-8", errors="replace") as f:
        if f.readline().strip() != "\\data\\":
            raise ConfigError(f"{path}: not an ARPA file (a KenLM binary needs lm.lexicon, a word list)")
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams and (not line or line.startswith("\\")):
                break
            elif in_unigrams:
                fields = line.split()
                if len(fields) >= 2 and fields[1] not in ARPA_SPECIAL:
                    words.append(fields[1])
    return words


def lexicon_words(path: str | Path) -> list[str]:
    return [ln.split()[0] for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


def spell(word: str, vocab: CharVocab) -> list[str] | None:
    """CTC tokens of ``word``, or None if a character is not in ``vocab``.  No trailing delimiter: the
    toolkit's CTC targets put ``|`` between words only, and the decoder treats it as silence."""
    chars = list(normalize_text(word).replace(" ", ""))
    if not chars or any(c not in vocab.tokens for c in chars):
        return None
    return chars


class LMDecoder:
    """Beam search over CTC log-probs [B, T, V] with ``cfg``'s LM; ``decode`` returns transcripts."""

    def __init__(self, cfg: LMConfig, vocab: CharVocab):
        require("flashlight.lib.text", "beam search with an n-gram LM")
        from flashlight.lib.text.decoder import (
            CriterionType,
            KenLM,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
        )
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict

        self.cfg = cfg
        words = lexicon_words(cfg.lexicon) if cfg.lexicon else arpa_unigrams(cfg.path)
        lexicon: dict[str, list[list[str]]] = {}
        dropped = []
        for w in words:
            spelling = spell(w, vocab)
            if spelling is None:
                dropped.append(w)
            else:
                lexicon[w] = [spelling]
        if dropped:
            log.info("LM: %d word(s) have characters outside the CTC vocabulary and are left out (e.g. %s)",
                     len(dropped), ", ".join(dropped[:5]))
        if not lexicon:
            raise ConfigError(f"{cfg.lexicon or cfg.path}: no word can be spelled with the model's vocabulary")
        self.num_words = len(lexicon)
        tokens = Dictionary(list(vocab.tokens))
        self.word_dict = create_word_dict({**lexicon, UNK_WORD: []})
        try:
            self.lm = KenLM(str(cfg.path), self.word_dict)
        except RuntimeError as e:  # KenLM's message: a source location line, then the reason
            reason = [ln for ln in str(e).splitlines() if ln.strip()][-1]
            raise ConfigError(f"lm.path: KenLM cannot read {cfg.path}: {reason}") from None
        silence = vocab.delimiter_id
        trie = Trie(len(vocab), silence)
        start = self.lm.start(False)
        for word, spellings in lexicon.items():
            idx = self.word_dict.get_index(word)
            _, score = self.lm.score(start, idx)
            for s in spellings:
                trie.insert([tokens.get_index(t) for t in s], idx, score)
        trie.smear(SmearingMode.MAX)
        options = LexiconDecoderOptions(
            beam_size=cfg.beam_size, beam_size_token=len(vocab), beam_threshold=cfg.beam_threshold,
            lm_weight=cfg.weight, word_score=cfg.word_score, unk_score=float("-inf"), sil_score=0.0,
            log_add=False, criterion_type=CriterionType.CTC,
        )
        self.decoder = LexiconDecoder(options, trie, self.lm, silence, vocab.blank_id,
                                      self.word_dict.get_index(UNK_WORD), [], False)

    def describe(self) -> str:
        c = self.cfg
        return (f"beam search (flashlight-text lexicon decoder), KenLM {Path(c.path).name}, {self.num_words} words, "
                f"lm weight {c.weight:g}, word score {c.word_score:g}, beam {c.beam_size}")

    def decode(self, log_probs: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> list[str]:
        B, T, V = log_probs.shape
        lengths = [T] * B if frame_lengths is None else [min(int(n), T) for n in frame_lengths]
        out = []
        for b in range(B):
            emissions = log_probs[b, : lengths[b]].detach().float().cpu().contiguous()
            results = self.decoder.decode(emissions.data_ptr(), emissions.shape[0], V) if lengths[b] else []
            words: Iterable[int] = results[0].words if results else []
            out.append(" ".join(self.word_dict.get_entry(w) for w in words if w >= 0))
        return out
