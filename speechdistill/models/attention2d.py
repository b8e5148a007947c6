"""Attention over a (generation step k, frame t) token grid: 2-D masks, the shared decoder block, KV cache.

GenDistiller (REFERENCE §3) runs one small transformer over tokens (k, t), where step k = 0 is the
front-end output x0 and step k >= 1 a generated (or, under teacher forcing, a teacher) layer.
Layers must stay causal in k (step k cannot see later steps, so training can run every step in one
pass and inference can cache earlier steps) while time stays bidirectional.  Grids are laid out
``[B, S, T, D]`` (S steps) and flattened step-major (index = s * T + t) for attention.

Mask kinds (query (k, t) may attend key (k', t') iff ...):

- ``"full"``: k' <= k, any t'.
- ``"previous"``: k' in {k - 1, k}, any t'.
- ``"axial"``: (k' == k, any t') or (t' == t, k' < k): time attention within a step plus causal
  attention across steps at the same frame, in ONE softmax over the union of both key sets.  It is
  computed factorised (scores [.., T, T] and [.., T, K] instead of [.., K*T, K*T]) so its cost grows
  linearly, not quadratically, with the number of steps.

Padding: padded frames are never keys of a valid query.  A padded query instead attends every key its
step pattern allows (padded keys included), which keeps every softmax row non-empty (an all-masked row
gives NaN with SDPA) and cannot leak into valid outputs, because padded tokens are never keys of valid
ones.  Callers zero padded inputs so that padded values stay finite (0 x NaN would leak through P @ V).

Cost: "full"/"previous" build a dense [B, 1, K*T, K*T] boolean mask for SDPA (about 0.13 GB for
24 x 15.6 s crops with K = 3; it grows with K**2, so prefer "axial" for many targets).  FlexAttention
is not wired in: SDPA with boolean masks runs on CPU and GPU alike.

Everything is written with tensor arithmetic on shapes and ``frame_lengths``-derived masks (no Python
branches on tensor values) so the inference path stays traceable for ONNX export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MASK_KINDS = ("full", "previous", "axial")


def check_mask_kind(kind: str) -> str:
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown 2-D attention mask {kind!r}; choose one of {', '.join(MASK_KINDS)}")
    return kind


def step_pattern(kind: str, q_steps: torch.Tensor, k_steps: torch.Tensor, q_t: torch.Tensor, k_t: torch.Tensor):
    """Boolean [Lq, Lk]: which (step, frame) keys each (step, frame) query may use, ignoring padding."""
    qs, ks = q_steps[:, None], k_steps[None, :]
    if kind == "full":
        return ks <= qs
    if kind == "previous":
        return (ks <= qs) & (ks >= qs - 1)
    if kind == "axial":
        return (ks == qs) | ((k_t[None, :] == q_t[:, None]) & (ks < qs))
    raise ValueError(check_mask_kind(kind))


def grid_mask(
    kind: str, q_start: int, num_q_steps: int, kv_start: int, num_kv_steps: int, valid: torch.Tensor
) -> torch.Tensor:
    """Dense boolean attention mask [B, 1, Sq*T, Skv*T] for queries at steps [q_start, q_start+Sq) and keys
    at steps [kv_start, kv_start+Skv); ``valid`` [B, T] marks real frames (see the module doc on padding)."""
    T = valid.shape[1]
    dev = valid.device
    # Flat index -> (step, frame) by arithmetic: repeat_interleave with a symbolic T exports badly to ONNX.
    qi = torch.arange(num_q_steps * T, device=dev)
    ki = torch.arange(num_kv_steps * T, device=dev)
    # (``%`` by a symbolic int does not export either, hence i - (i // T) * T.)
    q_rel, k_rel = torch.div(qi, T, rounding_mode="floor"), torch.div(ki, T, rounding_mode="floor")
    q_steps, q_t = q_start + q_rel, qi - q_rel * T
    k_steps, k_t = kv_start + k_rel, ki - k_rel * T
    allowed = step_pattern(kind, q_steps, k_steps, q_t, k_t)  # [Lq, Lk]
    key_ok = valid[:, k_t][:, None, :] | ~valid[:, q_t][:, :, None]  # [B, Lq, Lk]
    return (allowed[None] & key_ok)[:, None]


def axial_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_start: int,
    kv_start: int,
    valid: torch.Tensor,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The ``"axial"`` mask computed factorised.  q [B,H,Sq,T,d]; k, v [B,H,Skv,T,d] whose steps
    include the query steps.  Equals SDPA with ``grid_mask("axial", ...)`` (tested)."""
    Sq, T, d = q.shape[2], q.shape[3], q.shape[4]
    Skv = k.shape[2]
    scale = 1.0 / math.sqrt(d)
    off = q_start - kv_start
    k_same, v_same = k[:, :, off : off + Sq], v[:, :, off : off + Sq]
    s_time = torch.einsum("bhstd,bhsud->bhstu", q, k_same) * scale  # [B,H,Sq,T,T]
    s_step = torch.einsum("bhstd,bhrtd->bhstr", q, k) * scale  # [B,H,Sq,T,Skv]
    time_ok = valid[:, None, :] | ~valid[:, :, None]  # [B, Tq, Tk]
    q_abs = torch.arange(q_start, q_start + Sq, device=q.device)
    k_abs = torch.arange(kv_start, kv_start + Skv, device=q.device)
    # Only strictly earlier steps here: the same step's key at frame t is already in the time part.
    step_ok = k_abs[None, :] < q_abs[:, None]  # [Sq, Skv]
    neg = torch.finfo(s_time.dtype).min
    s_time = s_time.masked_fill(~time_ok[:, None, None], neg)
    s_step = s_step.masked_fill(~step_ok[None, None, :, None, :], neg)
    p = torch.softmax(torch.cat([s_time, s_step], dim=-1), dim=-1)
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p)
    p_time, p_step = p[..., :T], p[..., T:]
    return torch.einsum("bhstu,bhsud->bhstd", p_time, v_same) + torch.einsum("bhstr,bhrtd->bhstd", p_step, v)


@dataclass
class KVCache:
    """Keys/values of the steps seen so far, per decoder block: ``[B, H, S, T, d]`` each.

    Earlier steps' keys/values never change (the masks are causal in k), so generating step k only
    runs the decoder on step k's T tokens and reads the rest from here.
    """

    entries: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    num_steps: int = 0

    @classmethod
    def empty(cls, num_blocks: int) -> KVCache:
        return cls([None] * num_blocks, 0)

    def extend(self, block: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past = self.entries[block]
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        self.entries[block] = (k, v)
        return k, v


class GridSelfAttention(nn.Module):
    """Multi-head self-attention over a [B, S, T, D] step/frame grid under a 2-D mask."""

    def __init__(self, dim: int, heads: int, mask: str, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.mask = check_mask_kind(mask)
        self.dropout = dropout
        self.grid_attention_impl = "dense"  # issue 17 hook: dense | steps | flex | auto (models/block_attention.py)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        step0: int,
        valid: torch.Tensor,
        cache: KVCache | None = None,
        block: int = 0,
    ) -> torch.Tensor:
        B, S, T, D = x.shape
        qkv = self.qkv(x).view(B, S, T, 3, self.heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, S, T, d]
        kv_start = step0
        if cache is not None:
            k, v = cache.extend(block, k, v)
            kv_start = step0 + S - k.shape[2]
        if self.mask == "previous" and step0 - 1 > kv_start:
            # Only step0 - 1 onwards can be seen; skip the rest of the cache.
            drop = step0 - 1 - kv_start
            k, v, kv_start = k[:, :, drop:], v[:, :, drop:], step0 - 1
        p = self.dropout if self.training else 0.0
        if self.mask == "axial":
            o = axial_attention(q, k, v, step0, kv_start, valid, p)
        elif self.grid_attention_impl != "dense":  # issue 17 hook: no dense [S*T, Skv*T] mask
            from speechdistill.models.block_attention import block_grid_attention

            o = block_grid_attention(q, k, v, self.mask, step0, kv_start, valid, p, self.grid_attention_impl)
        else:
            Skv = k.shape[2]
            m = grid_mask(self.mask, step0, S, kv_start, Skv, valid)
            o = F.scaled_dot_product_attention(
                q.reshape(B, self.heads, S * T, self.head_dim),
                k.reshape(B, self.heads, Skv * T, self.head_dim),
                v.reshape(B, self.heads, Skv * T, self.head_dim),
                attn_mask=m,
                dropout_p=p,
            ).view(B, self.heads, S, T, self.head_dim)
        return self.out(o.permute(0, 2, 3, 1, 4).reshape(B, S, T, D))


class DecoderBlock(nn.Module):
    """Pre-LayerNorm transformer block over the step/frame grid; the SAME block serves every step."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, mask: str, dropout: float, attention_dropout: float,
                 eps: float = 1e-5):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.attn = GridSelfAttention(dim, heads, mask, attention_dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, step0: int, valid: torch.Tensor, cache: KVCache | None = None,
                block: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), step0, valid, cache, block))
        return x + self.drop(self.ffn(self.ffn_norm(x)))
