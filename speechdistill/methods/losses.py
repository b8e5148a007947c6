"""Layer-distillation loss (DistilHuBERT): L1 + cosine term, over valid frames, in fp32."""

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
    total = preds[0].new_zeros((), dtype=torch.float32)
    metrics: dict[str, float] = {}
    for p, t, lid in zip(preds, targets, layer_ids):
        loss, l1, cos = layer_loss(p, t, mask, cos_weight)
        total = total + loss
        metrics[f"l1_L{lid}"] = float(l1.detach())
        metrics[f"cos_L{lid}"] = float(cos.detach())
    return total, metrics


class GradScale(torch.autograd.Function):
    """Identity forward, scaled gradient backward (DistilHuBERT scales the CNN's gradient by 0.1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None
