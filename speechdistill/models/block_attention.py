"""GenDistiller's 2-D attention without the dense [K*T, K*T] mask: memory linear in the number of steps.

A dense path (``attention2d.dense_grid_mask`` + SDPA, kept for tests) builds a boolean mask over every (step,
frame) pair and, on kernels that cannot take it fused, a score matrix of the same size: both grow with (K*T)**2.
``GridSelfAttention``'s own default already attends step by step; this module adds FlexAttention and
chooses between them (``speed.grid_attention``).
At 30 s (T = 1500 frames) and K = 3 steps that is 20 M mask entries per utterance and, for the math
kernel, 12 heads x 20 M fp32 scores = 0.97 GB, before the backward pass keeps them.

The masks "full" (k' <= k) and "previous" (k' in {k-1, k}) are block-structured: whole (step, step)
blocks are either allowed or not, and inside an allowed block only padding matters.  Two equal ways to
use that:

- ``impl="steps"`` (any device): one SDPA call per query step over the key steps it may see,
  concatenated along time.  Nothing of size (K*T)**2 is built; with no padding there is no mask at
  all, so SDPA picks its fused kernels (flash / memory-efficient on GPU, flash on CPU), whose saved
  state for backward is the output and a log-sum-exp per query: linear in K.  With padding the mask
  is the key-padding pattern [B, 1, T, n*T] of one query step.
- ``impl="flex"`` (CUDA): FlexAttention (Dong et al. 2024, ``torch.nn.attention.flex_attention``)
  with a block mask computed from the same rule; fully masked (step, step) blocks are skipped and the
  block mask is O((K*T / 128)**2) bits.  Eager FlexAttention also runs on CPU (slowly: it materialises
  the scores), which is how the tests check its mask function against the dense path.

Both equal SDPA with ``dense_grid_mask`` (padded queries included: they attend every key their step pattern
allows, padded keys too, exactly as the dense mask says), tested in ``tests/test_block_attention.py``.
The ``"axial"`` mask has its own factorised implementation in ``attention2d``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_KINDS = ("full", "previous")
IMPLS = ("native", "dense", "steps", "flex", "auto")


def resolve_impl(impl: str, device: torch.device) -> str:
    """``auto``: FlexAttention on CUDA when torch has it, per-step SDPA elsewhere."""
    if impl not in IMPLS:
        raise ValueError(f"unknown grid attention implementation {impl!r}; choose one of {', '.join(IMPLS)}")
    if impl != "auto":
        return impl
    if device.type == "cuda" and _flex_available():
        return "flex"
    return "steps"


@functools.cache
def _flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def key_step_range(kind: str, q_step: int, kv_start: int, num_kv_steps: int) -> tuple[int, int]:
    """Key steps [lo, hi) (relative to ``kv_start``) that query step ``q_step`` (absolute) may attend."""
    if kind not in BLOCK_KINDS:
        raise ValueError(f"block attention supports masks {BLOCK_KINDS}, not {kind!r}")
    first = q_step - 1 if kind == "previous" else kv_start
    lo = max(first, kv_start) - kv_start
    hi = min(q_step + 1 - kv_start, num_kv_steps)
    return lo, hi


def _padding_mask(valid: torch.Tensor, repeats: int) -> torch.Tensor | None:
    """[B, 1, T, repeats*T] key-padding pattern of ``dense_grid_mask`` (valid queries see valid keys only; padded
    queries see every key), or None when nothing is padded."""
    if bool(valid.all()):
        return None
    key_ok = valid[:, None, :] | ~valid[:, :, None]  # [B, Tq, Tk]
    return key_ok.repeat(1, 1, repeats)[:, None]


def steps_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str, q_start: int, kv_start: int,
    valid: torch.Tensor, dropout_p: float = 0.0,
) -> torch.Tensor:
    """Per-query-step SDPA.  q [B, H, Sq, T, d]; k, v [B, H, Skv, T, d]; returns [B, H, Sq, T, d]."""
    B, H, Sq, T, d = q.shape
    Skv = k.shape[2]
    masks: dict[int, torch.Tensor | None] = {}
    outs = []
    for i in range(Sq):
        lo, hi = key_step_range(kind, q_start + i, kv_start, Skv)
        n = hi - lo
        if n not in masks:
            masks[n] = _padding_mask(valid, n)
        outs.append(F.scaled_dot_product_attention(
            q[:, :, i], k[:, :, lo:hi].reshape(B, H, n * T, d), v[:, :, lo:hi].reshape(B, H, n * T, d),
            attn_mask=masks[n], dropout_p=dropout_p,
        ))
    return torch.stack(outs, dim=2)


def grid_mask_mod(kind: str, T: int, q_start: int, kv_start: int, valid: torch.Tensor):
    """FlexAttention ``mask_mod`` equal to ``dense_grid_mask(kind, ...)`` on the flattened (step, frame) axes."""
    if kind not in BLOCK_KINDS:
        raise ValueError(f"block attention supports masks {BLOCK_KINDS}, not {kind!r}")

    def mask_mod(b, h, q_idx, kv_idx):
        qs = q_start + q_idx // T
        ks = kv_start + kv_idx // T
        tq = q_idx % T
        tk = kv_idx % T
        step_ok = ks <= qs
        if kind == "previous":
            step_ok = step_ok & (ks >= qs - 1)
        return step_ok & (valid[b, tk] | ~valid[b, tq])

    return mask_mod


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # FlexAttention is only fast compiled (it generates one fused kernel per mask); dynamic=False keeps
    # one kernel per (K*T) shape, which data.pad_to_multiple bounds.
    return torch.compile(flex_attention, dynamic=False)


def flex_grid_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str, q_start: int, kv_start: int,
    valid: torch.Tensor, compiled: bool | None = None,
) -> torch.Tensor:
    """FlexAttention with a block mask.  ``compiled`` defaults to True on CUDA (eager elsewhere)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, H, Sq, T, d = q.shape
    Skv = k.shape[2]
    if compiled is None:
        compiled = q.device.type == "cuda"
    block = create_block_mask(
        grid_mask_mod(kind, T, q_start, kv_start, valid), B, None, Sq * T, Skv * T, device=q.device,
        # Compiled block-mask creation fails in inductor's C++ codegen on CPU (torch 2.13: VecMask<int> vs
        # VecMask<float>); eager creation is exact, and the compiled flex kernel itself works on CPU.
        _compile=compiled and q.device.type == "cuda",
    )
    fn = _compiled_flex() if compiled else flex_attention
    o = fn(q.reshape(B, H, Sq * T, d), k.reshape(B, H, Skv * T, d), v.reshape(B, H, Skv * T, d), block_mask=block)
    return o.view(B, H, Sq, T, d)


def block_grid_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str, q_start: int, kv_start: int,
    valid: torch.Tensor, dropout_p: float = 0.0, impl: str = "auto",
) -> torch.Tensor:
    """SDPA under ``dense_grid_mask(kind, q_start, Sq, kv_start, Skv, valid)`` without building it.

    q [B, H, Sq, T, d]; k, v [B, H, Skv, T, d] (their steps include the query steps).  FlexAttention has
    no attention dropout: with ``dropout_p > 0`` the per-step path runs instead."""
    impl = resolve_impl(impl, q.device)
    if impl == "flex" and dropout_p == 0.0:
        return flex_grid_attention(q, k, v, kind, q_start, kv_start, valid)
    return steps_attention(q, k, v, kind, q_start, kv_start, valid, dropout_p)


def set_grid_attention(model: nn.Module, impl: str) -> int:
    """Use ``impl`` (native | dense | steps | flex | auto) in every 2-D attention module of ``model`` whose
    mask is block-structured; returns how many were set.  ``native`` is the module's own per-step path
    (the default, which ONNX export traces); ``dense`` builds the full (K*T)**2 mask (the reference that
    the speed benchmarks compare against)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown grid attention implementation {impl!r}; choose one of {', '.join(IMPLS)}")
    n = 0
    for m in model.modules():
        if hasattr(m, "grid_attention_impl") and getattr(m, "mask", None) in BLOCK_KINDS:
            m.grid_attention_impl = impl
            n += 1
    return n
