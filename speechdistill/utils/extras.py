"""Optional dependencies (``pip install 'speechdistill[EXTRA]'``) and the one-line error when one is missing.

| extra | packages | needed by |
|---|---|---|
| export | onnx, onnxruntime, onnxscript | ``export --format onnx``, ONNX parity checks |
| tts | espeakng-loader | ``data synth``, ``demo`` |
| tensorboard | tensorboard | ``train.log_with=tensorboard`` (the default ``auto`` uses it when installed) |
| lm | flashlight-text | beam search with an n-gram LM (``evaluate --lm``) |
"""

from __future__ import annotations

import importlib
from types import ModuleType

from speechdistill.errors import SpeechDistillError

#: import name -> (pip package, extra)
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "onnxscript": ("onnxscript", "export"),
    "espeakng_loader": ("espeakng-loader", "tts"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "flashlight.lib.text": ("flashlight-text", "lm"),
}


class MissingExtraError(SpeechDistillError):
    """An optional package is not installed; the message names the extra that installs it."""

    def __init__(self, module: str, purpose: str):
        package, extra = EXTRAS.get(module, (module, ""))
        how = f"pip install 'speechdistill[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{purpose} needs the optional package {package}, which is not installed: {how}")
        self.module, self.package, self.extra = module, package, extra


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtraError`` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, purpose) from None
