"""``speechdistill evaluate``: WER/CER and real-time factor of a CTC model on a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from speechdistill.config import ConfigError


@dataclass
class EvaluateConfig:
    model: str = ""  # CTC model directory (OUT/model of finetune-ctc), or an exported .onnx CTC model
    manifest: str = ""  # JSONL with reference transcripts
    out: str = ""  # report.json and hypotheses.jsonl go here
    threads: int = 0  # torch CPU threads during evaluation (0 = torch's current setting)
    on_bad_audio: Literal["error", "skip"] = "error"
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    batch_size: int = 0  # utterances per batch (0 = 1 on CPU so padding does not inflate RTF, 16 on GPU)
    max_batch_seconds: float = 120.0

    def validate(self) -> None:
        for name in ("model", "manifest", "out"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required (--{name} ...)")
        if self.threads < 0 or self.batch_size < 0:
            raise ConfigError("threads and batch_size must be >= 0 (0 = automatic)")
        if self.max_batch_seconds <= 0:
            raise ConfigError("max_batch_seconds must be positive")


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    from speechdistill.asr.evaluate import evaluate_model

    return evaluate_model(
        cfg.model, cfg.manifest, cfg.out, threads=cfg.threads or None, max_batch_seconds=cfg.max_batch_seconds,
        max_batch_size=cfg.batch_size or None, on_bad_audio=cfg.on_bad_audio, device=cfg.device,
    )
