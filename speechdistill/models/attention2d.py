"""Attention over a (generation step k, frame t) token grid: 2-D masks, the shared decoder block, KV cache.

GenDistiller (arXiv 2310.13418; design in docs of ``models.gendistiller``) runs one small transformer
over tokens (k, t), where step k = 0 is the front-end output x0 and step k >= 1 a generated (or, under
teacher forcing, a teacher) layer.  Steps stay causal (step k cannot see later steps, so training can
run every step in one pass and inference can cache earlier steps) while time stays bidirectional.
Grids are laid out ``[B, S, T, D]`` (S steps).

Mask kinds (query (k, t) may attend key (k', t') iff ...):

- ``"full"``: k' <= k, any t'.
- ``"previous"``: k' in {k - 1, k}, any t'.
- ``"axial"``: (k' == k, any t') or (t' == t, k' < k): time attention within a step plus causal
  attention across steps at the same frame, in ONE softmax over the union of both key sets, computed
  factorised (scores [.., T, T] and [.., T, K]) so its cost grows linearly with the number of steps.

How "full"/"previous" are computed: one attention call per query step, against the keys of the steps
that step may see (its own and earlier ones, read from the KV cache at inference).  Every allowed key
set is a contiguous run of whole steps, so the only mask left is key padding, ``[B, 1, 1, keys]``,
and none at all when nothing is padded.  No dense ``[(K*T), (K*T)]`` mask is ever built, and the
teacher-forced pass does (K+1)/2K of the dense pass's score work for "full" (1/2 + 1/2K).
``dense_grid_mask`` keeps the dense definition as the reference the tests compare against.

Padding: padded frames are never keys (of any query).  A query of an utterance with no valid frame at
all would have no key left; the additive mask uses the dtype's finite minimum instead of -inf so such a
row becomes a finite uniform average (never NaN, in forward or backward), and its output is zeroed by
the caller like every padded frame.  Callers zero padded inputs so that padded values stay finite
(0 x NaN would leak through P @ V).

Everything is tensor arithmetic on shapes and ``valid`` masks; the one Python branch on values
(``valid.all()``: skip the mask) is not taken while tracing, so the exported graph keeps the mask and
serves padded batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MASK_KINDS = ("full", "previous", "axial")
BLOCK_NORMS = ("pre", "post")


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


def dense_grid_mask(
    kind: str, q_start: int, num_q_steps: int, kv_start: int, num_kv_steps: int, valid: torch.Tensor
) -> torch.Tensor:
    """The mask semantics as one dense boolean [B, 1, Sq*T, Skv*T] (step-major flattening), for tests.

    Padded keys are excluded for every query; a padded query keeps its pattern (see the module doc)."""
    T = valid.shape[1]
    dev = valid.device
    qi = torch.arange(num_q_steps * T, device=dev)
    ki = torch.arange(num_kv_steps * T, device=dev)
    q_rel, k_rel = torch.div(qi, T, rounding_mode="floor"), torch.div(ki, T, rounding_mode="floor")
    allowed = step_pattern(kind, q_start + q_rel, kv_start + k_rel, qi - q_rel * T, ki - k_rel * T)
    key_ok = valid[:, ki - k_rel * T][:, None, :]  # [B, 1, Lk]
    return (allowed[None] & key_ok)[:, None]


def needs_mask(valid: torch.Tensor) -> bool:
    """False when no frame is padded (eager only): attention then needs no mask at all."""
    if tracing():
        return True
    return not bool(valid.all())


def key_padding_bias(valid: torch.Tensor, num_steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive bias [B, 1, 1, num_steps*T]: 0 for valid key frames, the dtype's minimum for padded ones."""
    neg = torch.finfo(dtype).min
    bias = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, neg)
    return bias.repeat(1, num_steps)[:, None, None, :]


def tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def stepwise_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Attention of q [B, H, T, d] over keys/values [B, H, n, T, d] (n whole steps), one step's keys at a
    time with a running softmax (the flash-attention recurrence): peak memory is one [B, H, T, T] score
    block instead of [B, H, T, n*T].  Same result as one softmax over all n*T keys (tested); used for the
    exported graph, where onnxruntime materialises every score tensor (30 s at Base shape: 1.9 -> see
    bench/RESULTS.md)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    bias = key_padding_bias(valid, 1, q.dtype)  # [B, 1, 1, T]
    m = l = acc = None
    for j in range(k.shape[2]):
        s = torch.matmul(q, k[:, :, j].transpose(-1, -2)) * scale + bias
        m_j = s.amax(-1, keepdim=True)
        if m is None:
            m = m_j
            p = torch.exp(s - m)
            l, acc = p.sum(-1, keepdim=True), torch.matmul(p, v[:, :, j])
        else:
            m_new = torch.maximum(m, m_j)
            c = torch.exp(m - m_new)
            p = torch.exp(s - m_new)
            l = l * c + p.sum(-1, keepdim=True)
            acc = acc * c + torch.matmul(p, v[:, :, j])
            m = m_new
    return acc / l


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
    include the query steps.  Equals attention under ``dense_grid_mask("axial", ...)`` (tested)."""
    Sq, T, d = q.shape[2], q.shape[3], q.shape[4]
    Skv = k.shape[2]
    scale = 1.0 / math.sqrt(d)
    off = q_start - kv_start
    k_same, v_same = k[:, :, off : off + Sq], v[:, :, off : off + Sq]
    s_time = torch.einsum("bhstd,bhsud->bhstu", q, k_same) * scale  # [B,H,Sq,T,T]
    s_step = torch.einsum("bhstd,bhrtd->bhstr", q, k) * scale  # [B,H,Sq,T,Skv]
    neg = torch.finfo(s_time.dtype).min
    q_abs = torch.arange(q_start, q_start + Sq, device=q.device)
    k_abs = torch.arange(kv_start, kv_start + Skv, device=q.device)
    # Only strictly earlier steps here: the same step's key at frame t is already in the time part.
    step_ok = k_abs[None, :] < q_abs[:, None]  # [Sq, Skv]
    s_step = s_step.masked_fill(~step_ok[None, None, :, None, :], neg)
    if needs_mask(valid):
        s_time = s_time.masked_fill(~valid[:, None, None, None, :], neg)
        # The step keys of frame t are padded exactly when frame t is.
        s_step = s_step.masked_fill(~valid[:, None, None, :, None], neg)
    p = torch.softmax(torch.cat([s_time, s_step], dim=-1), dim=-1)
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p)
    p_time, p_step = p[..., :T], p[..., T:]
    return torch.einsum("bhstu,bhsud->bhstd", p_time, v_same) + torch.einsum("bhstr,bhrtd->bhstd", p_step, v)


@dataclass
class KVCache:
    """Keys/values of the steps seen so far, per decoder block: ``[B, H, S, T, d]`` each.

    Earlier steps' keys/values never change (the masks are causal in k), so generating step k only
    runs the decoder on step k's T tokens and reads the rest from here.  Under free-running training
    the cached tensors keep their autograd history, so later steps' losses reach earlier steps.
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
    """Multi-head self-attention over a [B, S, T, D] step/frame grid under a 2-D mask.

    Projections are stored like HF HuBERT's (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) so a
    teacher layer's attention copies in unchanged."""

    def __init__(self, dim: int, heads: int, mask: str, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.mask = check_mask_kind(mask)
        self.dropout = dropout
        # native (below: per step, traceable for export) | dense | steps | flex | auto (models/block_attention.py)
        self.grid_attention_impl = "native"
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, S, T, _ = x.shape
        return x.view(B, S, T, self.heads, self.head_dim).permute(0, 3, 1, 2, 4)  # [B, H, S, T, d]

    def forward(
        self,
        x: torch.Tensor,
        step0: int,
        valid: torch.Tensor,
        cache: KVCache | None = None,
        block: int = 0,
    ) -> torch.Tensor:
        B, S, T, D = x.shape
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        kv_start = step0
        if cache is not None:
            k, v = cache.extend(block, k, v)
            kv_start = step0 + S - k.shape[2]
        p = self.dropout if self.training else 0.0
        if self.mask == "axial":
            o = axial_attention(q, k, v, step0, kv_start, valid, p)
        elif self.grid_attention_impl == "dense":
            # The reference the speed benchmarks compare against: one dense [Sq*T, Skv*T] mask, memory (K*T)**2.
            Skv = k.shape[2]
            m = dense_grid_mask(self.mask, step0, S, kv_start, Skv, valid)
            o = F.scaled_dot_product_attention(
                q.reshape(B, self.heads, S * T, self.head_dim), k.reshape(B, self.heads, Skv * T, self.head_dim),
                v.reshape(B, self.heads, Skv * T, self.head_dim), attn_mask=m, dropout_p=p,
            ).view(B, self.heads, S, T, self.head_dim)
        elif self.grid_attention_impl != "native":  # speed.grid_attention: per-step SDPA or FlexAttention
            from speechdistill.models.block_attention import block_grid_attention

            o = block_grid_attention(q, k, v, self.mask, step0, kv_start, valid, p, self.grid_attention_impl)
        else:
            masked = needs_mask(valid)
            outs = []
            for s in range(S):
                step = step0 + s
                lo = max(kv_start, step - 1) if self.mask == "previous" else kv_start
                n = step + 1 - lo
                ks, vs = k[:, :, lo - kv_start : step + 1 - kv_start], v[:, :, lo - kv_start : step + 1 - kv_start]
                if tracing() and p == 0.0:
                    outs.append(stepwise_softmax_attention(q[:, :, s], ks, vs, valid))
                    continue
                bias = key_padding_bias(valid, n, q.dtype) if masked else None
                outs.append(F.scaled_dot_product_attention(
                    q[:, :, s], ks.reshape(B, self.heads, n * T, self.head_dim),
                    vs.reshape(B, self.heads, n * T, self.head_dim), attn_mask=bias, dropout_p=p))
            o = torch.stack(outs, dim=2)  # [B, H, S, T, d]
        return self.out_proj(o.permute(0, 2, 3, 1, 4).reshape(B, S, T, D))


class DecoderBlock(nn.Module):
    """Transformer block over the step/frame grid; the SAME block serves every step it is shared by.

    ``norm="pre"``: x + attn(LN(x)), then + ffn(LN(.)) (stable to train from random weights).
    ``norm="post"``: LN(x + attn(x)), then LN(. + ffn(.)): HF HuBERT/WavLM Base's layer layout, with the
    same parameter names, so a teacher layer copies in exactly (``load_teacher_layer``)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, mask: str, dropout: float, attention_dropout: float,
                 eps: float = 1e-5, norm: str = "pre"):
        super().__init__()
        if norm not in BLOCK_NORMS:
            raise ValueError(f"unknown block norm {norm!r}; choose one of {', '.join(BLOCK_NORMS)}")
        self.norm = norm
        self.attention = GridSelfAttention(dim, heads, mask, attention_dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.intermediate_dense = nn.Linear(dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.drop(self.act(self.intermediate_dense(x))))

    def forward(self, x: torch.Tensor, step0: int, valid: torch.Tensor, cache: KVCache | None = None,
                block: int = 0) -> torch.Tensor:
        if self.norm == "pre":
            x = x + self.drop(self.attention(self.layer_norm(x), step0, valid, cache, block))
            return x + self.drop(self.ffn(self.final_layer_norm(x)))
        x = self.layer_norm(x + self.drop(self.attention(x, step0, valid, cache, block)))
        return self.final_layer_norm(x + self.drop(self.ffn(x)))

    @torch.no_grad()
    def load_teacher_layer(self, layer: nn.Module) -> dict[str, object]:
        """Copy an HF HuBERT/WavLM/wav2vec2 encoder layer's weights into this block.

        Widths and heads must match.  A narrower FFN keeps the teacher neurons with the largest
        ||W_in[j]|| * ||W_out[:, j]|| (a magnitude choice; the attention is copied whole).  Returns a
        short record of what was copied, for the student's info file."""
        attn = layer.attention
        dim = self.layer_norm.normalized_shape[0]
        t_dim = attn.q_proj.weight.shape[0]
        t_heads = getattr(attn, "num_heads", None)
        if t_dim != dim or (t_heads is not None and t_heads != self.attention.heads):
            raise ValueError(
                f"cannot copy a teacher layer of width {t_dim} ({t_heads} heads) into a decoder block of width "
                f"{dim} ({self.attention.heads} heads): set the decoder width and heads to the teacher's"
            )
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            getattr(self.attention, name).load_state_dict(getattr(attn, name).state_dict())
        self.layer_norm.load_state_dict(layer.layer_norm.state_dict())
        self.final_layer_norm.load_state_dict(layer.final_layer_norm.state_dict())
        ff = layer.feed_forward
        w_in, b_in = ff.intermediate_dense.weight, ff.intermediate_dense.bias
        w_out, b_out = ff.output_dense.weight, ff.output_dense.bias
        n_ffn = self.intermediate_dense.out_features
        kept = torch.arange(w_in.shape[0])
        if n_ffn > w_in.shape[0]:
            raise ValueError(f"decoder FFN {n_ffn} is wider than the teacher's {w_in.shape[0]}: cannot copy it")
        if n_ffn < w_in.shape[0]:
            score = w_in.norm(dim=1) * w_out.norm(dim=0)
            kept = torch.sort(torch.topk(score, n_ffn).indices).values
        self.intermediate_dense.weight.copy_(w_in[kept])
        self.intermediate_dense.bias.copy_(b_in[kept])
        self.output_dense.weight.copy_(w_out[:, kept])
        self.output_dense.bias.copy_(b_out)
        return {"ffn_neurons_kept": int(n_ffn), "ffn_neurons_teacher": int(w_in.shape[0])}
