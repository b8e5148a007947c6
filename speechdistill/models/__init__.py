"""Encoders: loading (``load_encoder``), the encoder contract, HF families and project students.

``from speechdistill.models import load_encoder`` works; the import is lazy so that importing this
package stays free of torch and transformers.
"""

from __future__ import annotations

_LAZY = {"load_encoder": "speechdistill.models.load", "load_teacher": "speechdistill.models.load"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
