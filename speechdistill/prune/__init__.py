"""Retraining-free structured pruning (STAT and baselines) and the analytic MAC model.

``prune_model(encoder, calib_batches, method, keep_macs, ...) -> (PrunedEncoderModel, report)``
and ``count_encoder_macs(config_or_model, num_frames | seconds | num_samples) -> MacCount``.
Imports are lazy so ``import speechdistill.prune`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from speechdistill.prune.budget import MacCount, PruneError, count_encoder_macs
    from speechdistill.prune.stat import METHODS, PruneOptions, prune_model

_LAZY = {
    "prune_model": "speechdistill.prune.stat",
    "PruneOptions": "speechdistill.prune.stat",
    "METHODS": "speechdistill.prune.stat",
    "count_encoder_macs": "speechdistill.prune.budget",
    "MacCount": "speechdistill.prune.budget",
    "PruneError": "speechdistill.prune.budget",
}

__all__ = ["METHODS", "MacCount", "PruneError", "PruneOptions", "count_encoder_macs", "prune_model"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
