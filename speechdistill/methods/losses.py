"""Layer-distillation loss (DistilHuBERT, s3prl ``pretrain/distiller``): L1 + cosine term, in fp32.

Per target layer: mean |pred - target| over valid frames and dimensions, plus ``cos_weight`` x mean of
-log sigmoid(cos(pred, target)) over valid frames.  The total is the MEAN over target layers, as in the
reference (it averages one [B, targets, T, D] tensor), so the loss scale, gradient clipping and the
learning rates taken from the reference recipe mean the same thing whatever the number of targets.
With equal valid frames per target (always: they share one frame mask) the mean of per-target means
equals the reference's single mean (checked in tests/test_distilhubert.py).  s3prl's optional feature
penalty (``feat_pen_loss``, 0 in its recipes) is not implemented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def layer_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cos_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mean L1 + cos_weight * mean(-log sigmoid(cos)), valid frames only. Returns (loss, l1, cos_sim)."""
    pred = pred.float()
    target = target.float()
    m = mask.to(pred.dtype)
    n = m.sum().clamp(min=1)
    l1 = ((pred - target).abs().mean(-1) * m).sum() / n
    cos = F.cosine_similarity(pred, target, dim=-1)
    cos_term = (-F.logsigmoid(cos) * m).sum() / n
    cos_mean = (cos * m).sum() / n
    return l1 + cos_weight * cos_term, l1, cos_mean


def multi_layer_loss(
    preds: list[torch.Tensor], targets: list[torch.Tensor], layer_ids: list[int], mask: torch.Tensor,
    cos_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over target layers of ``layer_loss``; metrics ``l1_L{i}``, ``cos_L{i}``, ``loss_L{i}`` per layer."""
    if not preds or len(preds) != len(targets) or len(preds) != len(layer_ids):
        raise ValueError(f"{len(preds)} predictions, {len(targets)} targets and {len(layer_ids)} layer ids")
    total = preds[0].new_zeros((), dtype=torch.float32)
    metrics: dict[str, float] = {}
    for p, t, lid in zip(preds, targets, layer_ids):
        loss, l1, cos = layer_loss(p, t, mask, cos_weight)
        total = total + loss
        metrics[f"loss_L{lid}"] = float(loss.detach())
        metrics[f"l1_L{lid}"] = float(l1.detach())
        metrics[f"cos_L{lid}"] = float(cos.detach())
    return total / len(preds), metrics


class GradScale(torch.autograd.Function):
    """Identity forward, scaled gradient backward (DistilHuBERT scales the CNN's gradient by 0.1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None
