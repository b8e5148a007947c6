"""``speechdistill evaluate``: WER/CER and real-time factor of a CTC model on a manifest."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from speechdistill.asr.lm_decode import LMConfig
from speechdistill.config import ConfigError, check_ranges


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
    # Utterances longer than this (seconds; 0 = no limit) are decoded in chunks of this length, refused
    # (naming the file) or skipped: attention is quadratic in length, an hour-long file needs tens of GB.
    max_seconds: float = 60.0
    on_long_audio: Literal["chunk", "error", "skip"] = "chunk"
    # Beam search with a word n-gram LM (optional extra `lm`); lm.path empty = greedy CTC decoding.
    lm: LMConfig = field(default_factory=LMConfig)
    progress: bool = True

    def validate(self) -> None:
        for name in ("model", "manifest", "out"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required (--{name} ...)")
        check_ranges("", self, threads=">=0", batch_size=">=0", max_batch_seconds=">0", max_seconds=">=0",
                     hints={"threads": "0 = torch's current setting", "batch_size": "0 = automatic",
                            "max_seconds": "0 = no limit"})
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ConfigError(f"device={self.device!r}: choose cpu, cuda, cuda:N or auto")


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.utils.io import ensure_dir
    from speechdistill.utils.lock import output_lock

    ensure_dir(cfg.out, "--out folder")
    with output_lock(cfg.out, "--out folder"):
        return evaluate_model(
            cfg.model, cfg.manifest, cfg.out, threads=cfg.threads or None, max_batch_seconds=cfg.max_batch_seconds,
            max_batch_size=cfg.batch_size or None, on_bad_audio=cfg.on_bad_audio, device=cfg.device,
            max_seconds=cfg.max_seconds, on_long_audio=cfg.on_long_audio, lm=cfg.lm, progress=cfg.progress,
        )
