"""FLOPs actually executed by a training step, counted by torch's FlopCounterMode.

Importing ``report.stats`` registers the formulas torch lacks on CPU (scaled-dot-product attention), so
attention scores are counted like every other matrix product.
"""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode


def flop_counter() -> FlopCounterMode:
    import speechdistill.report.stats  # noqa: F401  (registers the missing attention formulas)

    return FlopCounterMode(display=False)
