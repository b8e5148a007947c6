"""Beam search with a word n-gram LM (optional extra `lm`: flashlight-text)."""

import sys

import pytest
import torch

from speechdistill.asr.decode import greedy_decode
from speechdistill.asr.vocab import CharVocab
from speechdistill.utils.extras import MissingExtraError

# A bigram LM over two words, in the ARPA format KenLM's lmplz writes.
ARPA = """\\data\\
ngram 1=5
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
0\t<s>\t0
-0.5\t</s>\t0
-0.4\tONE\t0
-0.4\tTWO\t0

\\2-grams:
-0.3\t<s> ONE
-0.3\tONE TWO

\\end\\
"""


def _emissions(vocab: CharVocab, frames: list[dict[str, float]]) -> torch.Tensor:
    """Log-probs [1, T, V]: each frame puts the given mass on its tokens, the rest on blank."""
    lp = torch.full((1, len(frames), len(vocab)), 1e-4)
    for t, probs in enumerate(frames):
        for tok, p in probs.items():
            lp[0, t, vocab.tokens.index(tok)] = p
        lp[0, t, 0] += max(0.0, 1.0 - sum(probs.values()))
    return (lp / lp.sum(-1, keepdim=True)).log()


def test_lm_decoder_picks_words_of_the_lexicon(tmp_path):
    pytest.importorskip("flashlight.lib.text")
    from speechdistill.asr.lm_decode import LMConfig, LMDecoder

    (tmp_path / "lm.arpa").write_text(ARPA)
    vocab = CharVocab.build(["ONE TWO"])
    frames = [{"O": 0.9}, {"N": 0.9}, {"E": 0.9}, {"|": 0.9}, {"T": 0.9}, {"W": 0.9}, {"E": 0.5, "O": 0.4}, {}]
    lp = _emissions(vocab, frames)
    assert greedy_decode(lp, None, vocab) == ["ONE TWE"]  # greedy misspells the last word
    decoder = LMDecoder(LMConfig(path=str(tmp_path / "lm.arpa"), weight=0.5), vocab)
    assert decoder.num_words == 2
    assert decoder.decode(lp, torch.tensor([len(frames)])) == ["ONE TWO"]
    assert "KenLM lm.arpa" in decoder.describe()


def test_missing_lm_extra_names_it(tmp_path, monkeypatch):
    from speechdistill.asr.lm_decode import LMConfig, LMDecoder

    (tmp_path / "lm.arpa").write_text(ARPA)
    monkeypatch.setitem(sys.modules, "flashlight.lib.text", None)
    with pytest.raises(MissingExtraError, match=r"speechdistill\[lm\]"):
        LMDecoder(LMConfig(path=str(tmp_path / "lm.arpa")), CharVocab.build(["ONE TWO"]))
