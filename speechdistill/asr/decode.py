"""Greedy CTC decoding (the SUPERB ASR protocol decodes without a language model).

Beam search with an n-gram LM is not provided: no maintained CTC beam-search library
(pyctcdecode, torchaudio's flashlight decoder) is a dependency of this project.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from speechdistill.asr.vocab import CharVocab


def collapse_ctc(ids: Sequence[int], blank: int = 0) -> list[int]:
    """CTC rule: merge consecutive repeats first, then drop blanks (so "A _ A" stays "AA")."""
    out: list[int] = []
    prev = None
    for i in ids:
        i = int(i)
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


def greedy_ids(
    log_probs: torch.Tensor, frame_lengths: torch.Tensor | None = None, blank: int = 0
) -> list[list[int]]:
    """Best path per utterance from ``log_probs`` [B, T, V]; frames past ``frame_lengths`` are ignored."""
    if log_probs.dim() != 3:
        raise ValueError(f"expected log-probs [B, T, V], got shape {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu()
    B, T = best.shape
    lengths = [T] * B if frame_lengths is None else [min(int(n), T) for n in frame_lengths.cpu()]
    out = []
    for b in range(B):
        seq = best[b, : lengths[b]]
        if seq.numel() == 0:
            out.append([])
            continue
        merged = torch.unique_consecutive(seq)
        out.append(merged[merged != blank].tolist())
    return out


def greedy_decode(
    log_probs: torch.Tensor, frame_lengths: torch.Tensor | None, vocab: CharVocab
) -> list[str]:
    """Transcripts (words separated by single spaces) for a batch of CTC log-probs."""
    return [vocab.decode(ids) for ids in greedy_ids(log_probs, frame_lengths, vocab.blank_id)]
