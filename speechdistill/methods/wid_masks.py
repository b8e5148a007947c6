"""WID's mask schedule and masked decay (Wu et al., Findings of NAACL 2024; released code WID-NAACL2024).

Every ``w_step`` optimizer steps the masks are recomputed from the compactors' column L2 norms and
grow linearly toward the target widths: the residual stream and the FFN over ``mask_updates`` updates,
attention over ``attention_updates``.  Scores, as in the released code:
- residual dims: column norms of the first layer's value-projection column compactor (``first_value``),
  or of all residual-reading column compactors together (``all``, our option);
- attention: column norms of each layer's output-projection column compactor; the ``head`` strategy
  removes whole heads (lowest summed norm), the ``dim`` strategy the same number of dims in every head;
- FFN neurons: column norms of each layer's FFN-output column compactor.

Structure the merged stock model needs (our additions for speech encoders): the residual mask keeps the
same number of dims in every positional-conv group; for WavLM it also keeps the same offsets in every
head chunk (its gated position bias reads the residual stream per head), so WavLM heads stay and the
``dim`` strategy is the only one.

Masked entries (compactor columns/rows, biases and LayerNorm parameters of masked dims) get
``min(λ, 1) · p`` instead of their task gradient; for λ > 1 the rest, ``(λ - 1) · p``, enters Adam's
first moment only (as the released code does), so they move toward zero about λ times faster than a
normalised Adam step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from speechdistill.config import ConfigError
from speechdistill.models.compactor import CompactorEncoder, DecayTarget


@dataclass(frozen=True)
class WidthPlan:
    hidden: int
    hidden_target: int
    heads: int
    heads_target: int
    head_dim: int
    head_dim_target: int
    ffn: int
    ffn_target: int
    strategy: str  # "head" | "dim"
    groups: int  # positional-conv groups
    tied: bool  # WavLM: same residual offsets in every head chunk

    def describe(self) -> str:
        return (f"{self.hidden}->{self.hidden_target} wide, heads {self.heads}->{self.heads_target} x "
                f"{self.head_dim}->{self.head_dim_target}, FFN {self.ffn}->{self.ffn_target}")


def plan_widths(enc: CompactorEncoder, hidden_target: int, ffn_target: int, heads_target: int,
                strategy: str) -> WidthPlan:
    """Check the targets against the teacher and the stock-config constraints (ConfigError naming them)."""
    cfg = enc.config
    hidden, heads, ffn = cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size
    head_dim = hidden // heads
    groups = enc.pos_conv_groups
    hidden_target = hidden_target or hidden
    ffn_target = ffn_target or ffn
    heads_target = heads_target or (hidden_target // head_dim if strategy == "head" else heads)
    where = f"teacher {hidden} wide, {heads} heads of {head_dim}, FFN {ffn}, positional conv in {groups} groups"
    if not 0 < hidden_target <= hidden:
        raise ConfigError(f"wid.hidden_size={hidden_target} must be in [1, {hidden}] ({where})")
    if not 0 < ffn_target <= ffn:
        raise ConfigError(f"wid.intermediate_size={ffn_target} must be in [1, {ffn}] ({where})")
    if hidden_target % groups:
        raise ConfigError(f"wid.hidden_size={hidden_target} must be a multiple of the {groups} positional-conv "
                          f"groups ({where})")
    tied = enc.family == "wavlm"
    if strategy == "head":
        if tied and heads_target != heads:
            raise ConfigError(
                "wid.attention_strategy=head cannot remove WavLM heads: its gated relative position bias reads "
                "the residual stream in per-head chunks and layer 1's bias is shared by every layer, so a "
                "stock WavLMModel could not hold the result; use wid.attention_strategy=dim"
            )
        if heads_target * head_dim != hidden_target or not 0 < heads_target <= heads:
            raise ConfigError(
                f"wid.attention_strategy=head keeps whole heads of {head_dim} dims, so wid.num_attention_heads="
                f"{heads_target} gives {heads_target * head_dim} attention dims, but a stock config needs them "
                f"equal to wid.hidden_size={hidden_target} ({where})"
            )
        head_dim_target = head_dim
    elif strategy == "dim":
        if heads_target != heads:
            raise ConfigError(f"wid.attention_strategy=dim keeps all {heads} heads (narrower ones); got "
                              f"wid.num_attention_heads={heads_target} (use 0 or {heads})")
        if hidden_target % heads:
            raise ConfigError(f"wid.hidden_size={hidden_target} must split evenly into the {heads} heads ({where})")
        head_dim_target = hidden_target // heads
    else:
        raise ConfigError(f"wid.attention_strategy must be head or dim, got {strategy!r}")
    if tied:
        chunk, group = hidden // heads, hidden // groups
        block = math.gcd(chunk, group)
        if (head_dim_target * block) % chunk:
            raise ConfigError(
                f"WavLM: wid.hidden_size={hidden_target} cannot keep the same offsets in every head chunk and the "
                f"same number of dims in every positional-conv group ({where}); try a multiple of "
                f"{heads * chunk // block}"
            )
    return WidthPlan(hidden, hidden_target, heads, heads_target, head_dim, head_dim_target, ffn, ffn_target,
                     strategy, groups, tied)


def _removed(update: int, updates: int, total: int) -> int:
    """Linear growth: after ``update`` of ``updates`` mask updates, this many of ``total`` are masked."""
    return (min(update, updates) * total) // max(updates, 1)


def _keep_balanced(scores: torch.Tensor, block: int, remove_per_block: int) -> torch.Tensor:
    """Drop the ``remove_per_block`` lowest scores in every consecutive block of ``block``."""
    s = scores.view(-1, block)
    keep = torch.ones_like(s, dtype=torch.bool)
    if remove_per_block:
        drop = s.argsort(dim=1, stable=True)[:, :remove_per_block]
        keep.scatter_(1, drop, False)
    return keep.reshape(-1)


def column_norms(col: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(col.detach().float(), dim=0)


def residual_scores(enc: CompactorEncoder, how: str) -> torch.Tensor:
    if how == "first_value":
        return column_norms(enc.linears[0]["v"].col)
    total = None
    for lin in enc.linears:
        for name in ("q", "k", "v", "ffn_in"):
            sq = column_norms(lin[name].col) ** 2
            total = sq if total is None else total + sq
    return total.sqrt()


@torch.no_grad()
def update_masks(enc: CompactorEncoder, plan: WidthPlan, update: int, mask_updates: int,
                 attention_updates: int, residual_score: str = "first_value") -> None:
    """Recompute every mask for mask update number ``update`` (1, 2, ...), from the current compactors."""
    m = enc.masks
    # Residual stream: balanced over positional-conv groups (and, WavLM, tied across head chunks).
    scores = residual_scores(enc, residual_score)
    if plan.tied:
        chunk = plan.hidden // plan.heads
        block = math.gcd(chunk, plan.hidden // plan.groups)
        keep_per_block = plan.head_dim_target * block // chunk
        offsets = _keep_balanced(scores.view(plan.heads, chunk).sum(0), block,
                                 _removed(update, mask_updates, block - keep_per_block))
        m.residual.copy_(offsets.repeat(plan.heads))
    else:
        group = plan.hidden // plan.groups
        keep_per_group = plan.hidden_target // plan.groups
        m.residual.copy_(_keep_balanced(scores, group, _removed(update, mask_updates, group - keep_per_group)))
    for i, lin in enumerate(enc.linears):
        att = column_norms(lin["out"].col).view(plan.heads, plan.head_dim)
        if plan.strategy == "head":
            n = _removed(update, attention_updates, plan.heads - plan.heads_target)
            keep_heads = torch.ones(plan.heads, dtype=torch.bool, device=att.device)
            if n:
                keep_heads[att.sum(1).argsort(stable=True)[:n]] = False
            m.attention[i].copy_(keep_heads[:, None].expand(-1, plan.head_dim).reshape(-1))
        else:
            n = _removed(update, attention_updates, plan.head_dim - plan.head_dim_target)
            m.attention[i].copy_(_keep_balanced(att.reshape(-1), plan.head_dim, n))
        ffn = column_norms(lin["ffn_out"].col)
        n = _removed(update, mask_updates, plan.ffn - plan.ffn_target)
        m.ffn[i].copy_(_keep_balanced(ffn, plan.ffn, n))
    m.refresh()


@torch.no_grad()
def apply_masked_decay(targets: list[DecayTarget], optimizer: torch.optim.Optimizer, strength: float) -> None:
    """Masked entries: task gradient -> ``min(λ, 1) · p``; for λ > 1, ``(1 - β1)(λ - 1) · p`` more into
    Adam's first moment (see module doc)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    beta1 = {id(p): g.get("betas", (0.9, 0.999))[0] for g in inner.param_groups for p in g["params"]}
    for p, keep_fn in targets:
        keep = keep_fn()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        decay = p.detach() * min(strength, 1.0)
        p.grad.copy_(torch.where(keep, p.grad, decay))
        if strength > 1.0:
            exp_avg = inner.state.get(p, {}).get("exp_avg")
            if exp_avg is not None:
                b1 = beta1.get(id(p), 0.9)
                exp_avg.add_(torch.where(keep, torch.zeros_like(p), p.detach()), alpha=(1 - b1) * (strength - 1.0))
