"""Offline synthetic speech corpus: eSpeak NG voices (via the espeakng-loader wheel) reading
grammar-generated sentences or digit strings. Entry point: :func:`synthesize_corpus`.

Imports are lazy so ``import speechdistill.data.synth`` works without the optional ``tts`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AudioOptions", "EspeakUnavailableError", "ProsodyOptions", "SynthConfig", "synthesize_corpus"]


def __getattr__(name: str) -> Any:
    if name in ("synthesize_corpus", "AudioOptions", "ProsodyOptions", "SynthConfig"):
        from speechdistill.data.synth import corpus

        return getattr(corpus, name)
    if name == "EspeakUnavailableError":
        from speechdistill.data.synth.espeak import EspeakUnavailableError

        return EspeakUnavailableError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
