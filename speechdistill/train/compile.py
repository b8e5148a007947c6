"""``train.compile``: regional ``torch.compile`` of the student (and optionally the teacher).

Regional, not whole-model: the repeated blocks (each element of a ``ModuleList`` that has sub-modules:
transformer layers, CNN layers, GenDistiller's decoder blocks) get a compiled ``forward``.  Why:

- ``hf_encode`` collects hidden states with forward hooks added per call and stops early by raising
  from one; a whole-model graph would have to trace that, and every new hook set would recompile.
  Compiling ``forward`` (not ``__call__``) leaves the hooks in eager Python around each block.
- Identical blocks share one compiled graph (PyTorch's "regional compilation" recipe), so compile time
  does not grow with depth, and a block's kernels (LayerNorm, GELU, residual adds, dropout) still fuse.

Recompiles: ``dynamic=None`` lets dynamo specialise on the first shape and switch to a dynamic graph on
the second; ``data.pad_to_multiple_seconds`` bounds the distinct lengths a run sees.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILE_MODES = ("none", "student", "all")
CompileMode = Literal["none", "student", "all"]


def compile_regions(module: nn.Module, backend: str = "inductor", mode: str | None = None) -> int:
    """Compile the ``forward`` of every composite element of every outermost ``ModuleList`` in ``module``;
    returns how many blocks were compiled.  Idempotent."""
    n = 0

    def visit(m: nn.Module) -> None:
        nonlocal n
        for child in m.children():
            if isinstance(child, nn.ModuleList):
                for block in child:
                    if any(True for _ in block.children()):
                        if not getattr(block, "_sd_compiled", False):
                            # An instance attribute shadows the class's forward; __call__ (and its hooks)
                            # stay eager.
                            block.forward = torch.compile(block.forward, backend=backend, mode=mode)
                            block._sd_compiled = True
                        n += 1
                    else:
                        visit(block)
            else:
                visit(child)

    visit(module)
    return n


def apply_compile(method, model: nn.Module, mode: str, backend: str = "inductor") -> nn.Module:
    """The engine's hook: the method's own preparation (``prepare_model``, optional), then regional
    compilation of the student (``student``) and of the method's teacher too (``all``)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"train.compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    prepare = getattr(method, "prepare_model", None)
    if prepare is not None:
        model = prepare(model)
    if mode == "none":
        return model
    n = compile_regions(model, backend)
    msg = f"torch.compile ({backend}): {n} student block(s)"
    teacher = getattr(method, "teacher", None)
    if mode == "all" and isinstance(teacher, nn.Module):
        msg += f", {compile_regions(teacher, backend)} teacher block(s)"
    log.info(msg)
    return model
