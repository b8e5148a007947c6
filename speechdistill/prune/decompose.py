"""Interpolative decompositions used by STAT, and the frame-axis sketch that keeps them small.

Column ID (FFN neurons, CNN channels): column-pivoted QR ``A P = Q R`` (LAPACK geqp3 through
``scipy.linalg.qr(pivoting=True)``; torch has none).  Keeping the first k pivots,
``A ≈ A[:, kept] T`` with ``T = [I, R11^-1 R12]`` (columns put back in original order), and the
error is exactly ``||R22||_F``.  Because R is upper triangular, ``||R22(k)||_F^2`` is the sum of
the squared norms of R's rows k.. — one pass gives the error for every k.

Block ID (attention heads): a head is a block of ``head_dim`` columns.  Greedy block pivoting:
repeatedly keep the head whose residual block (after projecting out the span of the heads kept so
far) has the largest Frobenius norm; the residual norm after k steps is the block analogue of
``||R22||_F``.  The tall matrix is first reduced to its square R factor (an orthogonal change of
rows changes neither norms nor projections), so the greedy loop costs O(n^3) instead of O(m n^2).
Eliminated heads are then expressed through the kept ones by least squares.

FrameSketch: activation matrices are (frames x units) with ~10^5 frames.  Rows are kept exactly
until ``rows`` frames have been seen, then folded into a CountSketch (each frame added, with a
random sign, to one of ``rows`` buckets), which preserves ``A^T A`` in expectation and costs
O(frames x units) — far cheaper than a dense Gaussian sketch or a Gram matrix.  Small calibration
sets (tests) therefore stay exact.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# BLAS threads
#
# geqp3 is dominated by one matrix-vector product per pivot.  With several OpenBLAS threads on
# cores that other processes also use, every one of those thousands of small parallel calls waits
# for a descheduled worker: measured here (2 cores, load ~7), a 4096 x 3072 pivoted QR took 13-33 s
# with 2 threads and 4.5 s with 1.  So the decompositions run with a bounded thread count.
# numpy and scipy wheels each bundle their own OpenBLAS; both are limited.  (threadpoolctl does
# this generally; it is not a dependency, so a ctypes call on the bundled libraries does it here,
# and is a no-op where they are absent.)

_SETTERS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@functools.lru_cache(maxsize=1)
def _openblas_handles() -> tuple[tuple[object, object], ...]:
    found = []
    for pkg in (np, scipy):
        libdir = Path(pkg.__file__).resolve().parent.parent / f"{pkg.__name__}.libs"
        for path in sorted(libdir.glob("*openblas*.so*")) if libdir.is_dir() else []:
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            for set_name, get_name in _SETTERS:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    found.append((getattr(lib, set_name), getattr(lib, get_name)))
                    break
    return tuple(found)


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit the bundled OpenBLAS libraries of numpy and scipy to ``n`` threads (None: unchanged)."""
    handles = _openblas_handles() if n else ()
    old = [get() for _, get in handles]
    for set_, _ in handles:
        set_(int(n))
    try:
        yield
    finally:
        for (set_, _), k in zip(handles, old):
            set_(int(k))


def _rank_rtol(dtype: np.dtype) -> float:
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-10


@dataclass
class PivotedQR:
    r: np.ndarray  # [min(m, n), n], upper triangular (in pivot order)
    perm: np.ndarray  # [n], column order chosen by the pivoting

    @property
    def n(self) -> int:
        return self.r.shape[1]

    def errors(self) -> np.ndarray:
        """``err[k] = ||R22||_F`` when keeping the first k pivots, k = 0..n (``err[n] = 0``)."""
        row_sq = np.einsum("ij,ij->i", self.r, self.r, dtype=np.float64)
        tail = np.zeros(self.n + 1)
        tail[: len(row_sq)] = np.cumsum(row_sq[::-1])[::-1]
        return np.sqrt(np.maximum(tail, 0.0))


def pivoted_qr(a: np.ndarray) -> PivotedQR:
    """Column-pivoted QR of ``a`` (float32 is fine and ~5x faster for the selection)."""
    r, perm = scipy.linalg.qr(a, mode="r", pivoting=True, check_finite=False)
    # mode="r" returns the full (m x n) R; its rows beyond n are zero.
    return PivotedQR(np.ascontiguousarray(r[: min(a.shape)]), np.asarray(perm))


def interpolation_matrix(qr: PivotedQR, k: int, rtol: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Kept columns (ascending) and T (k x n, float64) with ``A ≈ A[:, kept] @ T``.

    Pivots beyond the numerical rank (``|R_ii| <= rtol |R_00|``) are kept as plain copies and
    not used to express others, so R11 is never inverted where it is singular.
    """
    n = qr.n
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} columns")
    r = qr.r.astype(np.float64)
    rtol = _rank_rtol(qr.r.dtype) if rtol is None else rtol
    diag = np.abs(np.diag(r))[:k]
    rank = int(np.sum(diag > rtol * (diag[0] if k else 0.0))) if k else 0
    t_piv = np.zeros((k, n))
    t_piv[:, :k] = np.eye(k)
    if rank and k < n:
        t_piv[:rank, k:] = scipy.linalg.solve_triangular(r[:rank, :rank], r[:rank, k:], check_finite=False)
    t = np.zeros((k, n))
    t[:, qr.perm] = t_piv
    kept = qr.perm[:k]
    order = np.argsort(kept)
    return kept[order], t[order]


def interpolative_decomposition(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Convenience: ``(kept, T, ||R22||_F)`` for keeping k columns of ``a``."""
    qr = pivoted_qr(a)
    kept, t = interpolation_matrix(qr, k)
    return kept, t, float(qr.errors()[k])


def reduce_rows(a: np.ndarray) -> np.ndarray:
    """The R factor of a tall matrix (same column norms and geometry, at most n rows)."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape[0] <= a.shape[1]:
        return a
    return scipy.linalg.qr(a, mode="r", check_finite=False)[0][: a.shape[1]]


@dataclass
class BlockQR:
    order: np.ndarray  # block indices in the order the greedy pivoting picked them
    err: np.ndarray  # [num_blocks + 1] residual Frobenius norm after keeping k blocks


def block_pivoted_qr(a: np.ndarray, block: int) -> BlockQR:
    """Greedy block-pivoted QR over column blocks of width ``block`` (see module doc)."""
    res = reduce_rows(a).copy()
    n = res.shape[1]
    if n % block:
        raise ValueError(f"{n} columns do not split into blocks of {block}")
    nb = n // block
    chosen: list[int] = []
    err = np.zeros(nb + 1)
    scale = max(float(np.abs(res).max(initial=0.0)), 1e-300)
    for step in range(nb):
        blk = (res.reshape(res.shape[0], nb, block) ** 2).sum(axis=(0, 2))
        err[step] = np.sqrt(blk.sum())
        blk[chosen] = -1.0
        b = int(np.argmax(blk))
        chosen.append(b)
        cols = res[:, b * block : (b + 1) * block]
        # Orthonormal basis of the residual block; rank-deficient blocks (e.g. a duplicate head)
        # contribute only their numerically non-zero directions.
        u, s, _ = np.linalg.svd(cols, full_matrices=False)
        u = u[:, s > 1e-12 * scale * max(cols.shape)]
        if u.size:
            res -= u @ (u.T @ res)
        res[:, b * block : (b + 1) * block] = 0.0
    return BlockQR(np.array(chosen, dtype=np.int64), err)


def lstsq_coefficients(a_kept: np.ndarray, a_elim: np.ndarray) -> np.ndarray:
    """X minimising ``||a_kept X - a_elim||_F`` (minimum-norm where a_kept is rank deficient)."""
    if a_elim.shape[1] == 0:
        return np.zeros((a_kept.shape[1], 0))
    x, *_ = scipy.linalg.lstsq(a_kept, a_elim, check_finite=False)
    return x


class FrameSketch:
    """Streaming (frames x width) matrix: exact up to ``rows`` frames, then a CountSketch.

    ``rows=0`` keeps every frame exactly.  ``sum_sq`` is the exact squared Frobenius norm of
    everything added, ``frames`` the number of rows added.
    """

    def __init__(self, width: int, rows: int, seed: int = 0):
        self.width = width
        self.rows = int(rows)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.frames = 0
        self.sum_sq = 0.0
        self._exact: list[torch.Tensor] = []
        self._sketch: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.width).float().cpu()
        if x.shape[0] == 0:
            return
        self.frames += x.shape[0]
        self.sum_sq += float(torch.sum(x * x))
        if self._sketch is None:
            self._exact.append(x.clone())
            if self.rows and self.frames > self.rows:
                buffered = torch.cat(self._exact)
                self._exact = []
                self._sketch = torch.zeros(self.rows, self.width)
                self._fold(buffered)
        else:
            self._fold(x)

    def _fold(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        buckets = torch.randint(self.rows, (n,), generator=self.gen)
        signs = torch.randint(2, (n,), generator=self.gen, dtype=torch.int8).float().mul_(2).sub_(1)
        self._sketch.index_add_(0, buckets, x * signs[:, None])

    @property
    def is_sketched(self) -> bool:
        return self._sketch is not None

    def matrix(self) -> np.ndarray:
        if self._sketch is not None:
            return self._sketch.numpy()
        if not self._exact:
            return np.zeros((0, self.width), dtype=np.float32)
        return torch.cat(self._exact).numpy()

    def release(self) -> None:
        self._exact, self._sketch = [], None
