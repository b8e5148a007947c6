"""The small protocol every training method implements; the engine (``train.engine``) does the rest.

The engine owns: accelerate set-up, data loading with resumable position, optimizer and schedule,
mixed precision, gradient accumulation and clipping, logging, validation cadence, checkpoints,
resume and signal handling.  A method owns: what the trainable model is, how a batch becomes a loss,
how to validate, and how to write the final artefact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from speechdistill.data.batch import Batch


class Method(Protocol):
    name: str

    def build_model(self) -> nn.Module:
        """The trainable module (student, or encoder + CTC head). Prepared by accelerate, checkpointed."""

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups (per-group lr for e.g. a 0.1-scaled CNN)."""

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar fp32 loss and per-term metrics for logging (e.g. per-layer L1 and cosine)."""

    @torch.no_grad()
    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        """Metrics on the dev set (``batches`` yields ``Batch`` on the right device)."""

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        """Write the usable result (an HF-style student directory, a CTC model) to ``out_dir``."""

    # Optional: ``before_optimizer_step(model, optimizer, step)`` runs after gradient clipping and before
    # every optimizer step (``step`` = optimizer steps already taken), for methods that edit gradients or
    # optimizer state (WID's mask schedule and masked decay).  ``setup(device)`` runs before
    # ``build_model``.
