"""AdamW with warm-up and linear/cosine/constant decay (a plain LambdaLR: its state is JSON)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from speechdistill.config import ConfigError, check_ranges


@dataclass
class OptimConfig:
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.0
    warmup_ratio: float = 0.07
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    # Final lr as a fraction of the peak (linear and cosine).
    min_lr_ratio: float = 0.0
    grad_clip: float = 5.0

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas={self.betas!r}: must be two values (e.g. [0.9, 0.98])")
        check_ranges(
            "optim", self, lr=">0", betas="[0,1)", eps=">0", weight_decay=">=0", warmup_ratio="[0,1)",
            min_lr_ratio="[0,1]", grad_clip=">0",
            hints={"lr": "e.g. 2e-4", "min_lr_ratio": "the final lr as a fraction of the peak",
                   "grad_clip": "the max gradient norm, e.g. 5; a huge value disables clipping"},
        )


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    warmup = int(cfg.warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if cfg.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay


def build_optimizer(param_groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
