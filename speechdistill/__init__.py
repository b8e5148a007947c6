"""speechdistill: distill, prune and export self-supervised speech encoders."""

__version__ = "0.1.0"

SAMPLE_RATE = 16_000

# GenDistiller and pruned students load with transformers.AutoModel once transformers' auto module
# loads (a post-import hook: `import speechdistill` itself stays free of torch and transformers).
from speechdistill.models import auto_classes as _auto_classes

_auto_classes.install()
