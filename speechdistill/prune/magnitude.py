"""Magnitude baseline: structured pruning by weight norms, no calibration activations.

Scores: an FFN neuron j scores ``||W1[j, :]|| * ||W2[:, j]||`` (the size of the path through it);
a head scores ``sqrt(||Wq_h||^2 + ||Wk_h||^2 + ||Wv_h||^2 + ||Wo_h||^2)`` over its rows of q/k/v and
its columns of out_proj; a CNN channel scores ``||W_i[c]|| * ||W_{i+1}[:, c, :]||``.  A module
keeping its top-k units has error ``sqrt(sum of dropped scores^2 / sum of all scores^2)``, which
feeds the same global threshold rule as STAT.
"""

from __future__ import annotations

import numpy as np
import torch


def _order_and_curve(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    sq = scores[order].astype(np.float64) ** 2
    total = sq.sum()
    tail = np.zeros(len(scores) + 1)
    tail[: len(scores)] = np.cumsum(sq[::-1])[::-1]
    rel = np.sqrt(tail / total) if total > 0 else np.zeros(len(scores) + 1)
    return order, rel


def ffn_scores(w1: torch.Tensor, w2: torch.Tensor) -> np.ndarray:
    """w1: [I, D] (intermediate_dense.weight), w2: [D, I] (output_dense.weight)."""
    return (w1.double().norm(dim=1) * w2.double().norm(dim=0)).numpy()


def head_scores(
    wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor, head_dim: int
) -> np.ndarray:
    """q/k/v weights [H*hd, D], out_proj weight [D, H*hd]."""
    h = wq.shape[0] // head_dim

    def rows(w: torch.Tensor) -> torch.Tensor:
        return (w.double().reshape(h, head_dim, -1) ** 2).sum(dim=(1, 2))

    cols = (wo.double().reshape(wo.shape[0], h, head_dim) ** 2).sum(dim=(0, 2))
    return torch.sqrt(rows(wq) + rows(wk) + rows(wv) + cols).numpy()


def conv_scores(w: torch.Tensor, w_next: torch.Tensor) -> np.ndarray:
    """w: [C, C_in, k] of the pruned conv, w_next: [C_next, C, k'] of the conv that reads it."""
    out_norm = w.double().reshape(w.shape[0], -1).norm(dim=1)
    in_norm = w_next.double().transpose(0, 1).reshape(w_next.shape[1], -1).norm(dim=1)
    return (out_norm * in_norm).numpy()


def magnitude_curve(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit order, best first; relative error for keeping k = 0..n units)."""
    return _order_and_curve(np.asarray(scores, dtype=np.float64))
