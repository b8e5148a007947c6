"""speechdistill: distill, prune and export self-supervised speech encoders."""

__version__ = "0.1.0"

SAMPLE_RATE = 16_000
