"""``speed``: how a distillation step runs fast, without changing what it computes.

Every switch here keeps the loss the same up to floating-point rounding (tested); see
``models.teacher_forward`` (teacher precision, attention kernel, batched CNN),
``models.block_attention`` (GenDistiller's 2-D attention without a dense mask) and
``methods.teacher_cache`` (teacher targets from disk).  ``train.compile`` and the ``data`` loader
options are the other speed knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class SpeedConfig:
    # Teacher weights and compute: auto = bf16 on a CUDA GPU that supports it, fp32 elsewhere. Targets
    # are cast to fp32 before the loss.
    teacher_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Teacher attention kernel: auto = flash_attention_2 on CUDA when the flash-attn package is installed
    # (half precision), else sdpa where the family has it (HuBERT, wav2vec 2.0; WavLM has eager only).
    teacher_attention: Literal["auto", "eager", "sdpa", "flash_attention_2", "flex_attention"] = "auto"
    # Teacher CNN over the padded batch (masked first GroupNorm), not one call per utterance.
    teacher_batched_cnn: bool = True
    # GenDistiller's 2-D attention ("full"/"previous" masks): steps = one SDPA call per generation step
    # (no dense mask; memory linear in the steps), flex = FlexAttention block mask (CUDA; not yet run on
    # a GPU by this project), dense = the reference [K*T, K*T] mask, native = the model's own per-step
    # loop (what export traces), auto = steps.
    grid_attention: Literal["auto", "steps", "flex", "dense", "native"] = "auto"
    # On-disk cache of teacher target layers (fp16 safetensors keyed by utterance id, crop offset and
    # length): for several students, or many epochs of a small corpus with data.crop_seconds=0. "" = off.
    teacher_cache_dir: str = ""
    # Refuse to start when the cache's estimated size exceeds this many GB (0 = no limit).
    teacher_cache_max_gb: float = 0.0

    def validate(self) -> None:
        if self.teacher_cache_max_gb < 0:
            raise ValueError("speed.teacher_cache_max_gb must be >= 0")
