"""GenDistiller method: teacher-forced (or scheduled-sampling) training of the generative student."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class GenDistillerMethodConfig:
    targets: list[int] = field(default_factory=lambda: [4, 8, 12])
    decoder_hidden_size: int = 0  # 0: the teacher's width
    decoder_layers: int = 1
    decoder_heads: int = 12
    decoder_ffn_dim: int = 2048
    mask: Literal["full", "previous", "axial"] = "full"
    skip: bool = True
    output_projection: bool = True
    layer_embedding: bool = True
    dropout: float = 0.1
    init_from_teacher: bool = True
    cnn_grad_scale: float = 0.1
    freeze_cnn: bool = False
    cos_weight: float = 1.0
    # Probability that a history step uses the student's own (detached) prediction instead of the
    # teacher's layer; ramps linearly from 0 to this value over training (0 = pure teacher forcing).
    scheduled_sampling: float = 0.0
    # Dev loss computed from free-running generation (what inference sees) instead of teacher forcing.
    validate_free_running: bool = True
