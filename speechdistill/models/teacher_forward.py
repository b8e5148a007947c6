"""How a frozen teacher runs during distillation: precision, attention kernel, batched CNN.

The teacher forward is most of a distillation step (a 12-layer Base teacher against a 2-layer
student), so it gets what a frozen model allows and a trained one does not:

- ``torch.inference_mode`` (in ``Teacher.forward``): no autograd bookkeeping and no version counters.
  Its outputs are inference tensors, which autograd refuses to save for backward, so methods take
  fp32 copies of the target layers (``DistillMethod.teacher_targets``); the student's gradients are
  unaffected (tested).
- bf16 weights and compute on a GPU that has it (``dtype``).  Losses stay fp32: targets are cast up.
- the fastest attention kernel transformers offers for the family (``attention``): FlashAttention-2
  when the ``flash-attn`` package is installed and the device is CUDA, else PyTorch SDPA; WavLM's
  gated relative position bias only has HF's eager path.  With nothing padded, HF passes no mask to
  SDPA at all (tested), so SDPA can use its fused kernels.
- the CNN over the whole padded batch with a masked first GroupNorm (``batched_cnn``) instead of one
  CNN call per utterance: the same valid frames (``models.encoder``), one kernel launch per layer.
- the forward stops at the deepest target layer (``upto_layer``); layers above it never run (tested).
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from speechdistill.models.teacher import Teacher

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return DTYPES[name]


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attention(name: str, hf_model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> str | None:
    """The attention implementation to set, or None to keep the model's own."""
    if name != "auto":
        return name
    if (getattr(hf_model, "_supports_flash_attn", False) and device.type == "cuda"
            and dtype in (torch.float16, torch.bfloat16) and flash_attn_installed()):
        return "flash_attention_2"
    if getattr(hf_model, "_supports_sdpa", False):
        return "sdpa"
    return None


def configure_teacher(
    teacher: Teacher, device: torch.device | str, dtype: str = "auto", attention: str = "auto",
    batched_cnn: bool = True, cast: bool = True,
) -> dict[str, str]:
    """Move ``teacher`` to ``device`` in ``dtype`` (auto | fp32 | bf16 | fp16) and set its attention kernel
    (auto | eager | sdpa | flash_attention_2 | flex_attention) and CNN mode.  Returns what was chosen
    (for logs and benchmark reports).  ``cast=False`` leaves the weights fp32 for now (students copy
    their initial weights from the teacher: cast after that, ``teacher.to(chosen dtype)``)."""
    from speechdistill.models.encoder import hf_model_of
    from speechdistill.models.protocol import set_batched_cnn

    device = torch.device(device)
    if dtype not in ("auto", *DTYPES):
        raise ValueError(f"teacher dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    dtype = resolve_dtype(dtype, device)
    teacher.to(device=device, dtype=dtype if cast else None)
    chosen = {"dtype": str(dtype).removeprefix("torch."), "batched_cnn": str(batched_cnn)}
    try:
        hf = hf_model_of(teacher)
    except TypeError:  # a project student as teacher: it has no HF attention switch
        hf = None
    if hf is not None:
        impl = resolve_attention(attention, hf, device, dtype)
        if impl is not None and impl != hf.config._attn_implementation:
            try:
                hf.set_attn_implementation(impl)
            except (ValueError, ImportError) as e:
                raise ValueError(f"teacher attention {impl}: {e}") from None
        chosen["attention"] = hf.config._attn_implementation
    set_batched_cnn(teacher.encoder, batched_cnn)
    log.info("teacher forward: %s", ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return chosen
