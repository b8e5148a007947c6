"""CTC fine-tuning as a training ``Method`` (SUPERB ASR protocol by default); driver: ``run.finetune``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechdistill.asr.ctc_model import CTCHeadConfig, CTCModel, build_ctc_model
from speechdistill.asr.decode import greedy_decode
from speechdistill.asr.metrics import error_rates
from speechdistill.asr.vocab import CharVocab
from speechdistill.config import ConfigError
from speechdistill.data.batch import Batch

log = logging.getLogger(__name__)


@dataclass
class CTCConfig:
    # Encoder directory, hub id, or random:hubert / random:wavlm / random:wav2vec2.
    upstream: str = ""
    # HF config keys for a random upstream (plus ``preset: base|large|tiny``).
    upstream_config: dict[str, Any] = field(default_factory=dict)
    head: CTCHeadConfig = field(default_factory=CTCHeadConfig)
    # Encoder lr = optim.lr x this, when the encoder is unfrozen.
    encoder_lr_scale: float = 1.0

    def validate(self) -> None:
        if self.encoder_lr_scale < 0:
            raise ConfigError(f"ctc.encoder_lr_scale={self.encoder_lr_scale:g}: must be >= 0")


def _utterance_ctc_inputs(
    vocab: CharVocab, texts: list[str | None], device: torch.device
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Indices of utterances with a non-empty transcript, concatenated targets, target lengths."""
    keep, targets, lengths = [], [], []
    for i, t in enumerate(texts):
        ids = vocab.encode(t)
        if not ids:
            continue
        keep.append(i)
        targets.extend(ids)
        lengths.append(len(ids))
    return (
        keep,
        torch.tensor(targets, dtype=torch.long, device=device),
        torch.tensor(lengths, dtype=torch.long, device=device),
    )


class CTCMethod:
    """Encoder + CTC head trained with character CTC; the engine keeps the model with the best dev WER."""

    name = "ctc"
    best_metric = ("dev_wer", "min")

    def __init__(self, cfg: CTCConfig, vocab: CharVocab, seed: int = 0):
        self.cfg = cfg
        self.vocab = vocab
        self.seed = seed
        self._warned_empty = False

    def build_model(self) -> CTCModel:
        model = build_ctc_model(self.cfg.upstream, self.vocab, self.cfg.head, self.cfg.upstream_config, self.seed)
        n = model.num_parameters()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(
            "CTC model: encoder %.2fM, head %.2fM params; %.2fM trainable (%s encoder)",
            n["encoder"] / 1e6, n["head"] / 1e6, trainable / 1e6,
            "frozen" if model.encoder_frozen else "unfrozen",
        )
        return model

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Head (layer weights, LSTM, output) at ``lr``; an unfrozen encoder at ``lr * encoder_lr_scale``.

        No weight decay on biases, norms and the layer weights.
        """
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            part = "encoder" if name.startswith("encoder.") else "head"
            decay = p.ndim >= 2 and "norm" not in name
            groups.setdefault((part, decay), []).append(p)
        out = []
        for (part, decay), params in groups.items():
            scale = self.cfg.encoder_lr_scale if part == "encoder" else 1.0
            if scale == 0:
                continue
            out.append({"params": params, "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0,
                        "name": f"{part}{'' if decay else '_no_decay'}"})
        return out

    def log_probs(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, frame lengths) of a batch; a subclass may feed features cached from a frozen encoder."""
        return model(batch.wav, batch.lengths)

    def _loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, dict[str, float]]:
        log_probs, frame_lengths = self.log_probs(model, batch)
        keep, targets, target_lengths = _utterance_ctc_inputs(self.vocab, list(batch.texts), log_probs.device)
        stats = {"empty_transcripts": float(len(batch.texts) - len(keep))}
        if len(keep) < len(batch.texts) and not self._warned_empty:
            missing = [batch.ids[i] for i in range(len(batch.texts)) if i not in keep]
            log.warning("utterance(s) without a transcript are left out of the CTC loss, e.g. %s", missing[:3])
            self._warned_empty = True
        if not keep:
            return None, log_probs, frame_lengths, stats
        idx = torch.tensor(keep, device=log_probs.device)
        lp = log_probs.index_select(0, idx)
        fl = frame_lengths.index_select(0, idx).long()
        # CTC cannot emit more labels than frames; zero_infinity zeroes these, so count them.
        stats["infeasible"] = float((target_lengths > fl).sum())
        loss = F.ctc_loss(
            lp.float().transpose(0, 1), targets, fl, target_lengths,
            blank=self.vocab.blank_id, reduction="mean", zero_infinity=True,
        )
        return loss, log_probs, frame_lengths, stats

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, log_probs, _, stats = self._loss(model, batch)
        if loss is None:
            # Keep the graph connected so DDP and the engine's backward still work.
            return log_probs.sum() * 0.0, stats
        return loss, stats

    @torch.no_grad()
    def validate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        refs: list[str] = []
        hyps: list[str] = []
        loss_sum, loss_n = 0.0, 0
        for batch in batches:
            loss, log_probs, frame_lengths, stats = self._loss(model, batch)
            n = len(batch.texts) - int(stats["empty_transcripts"])
            if loss is not None:
                loss_sum += float(loss) * n
                loss_n += n
            for text, hyp in zip(batch.texts, greedy_decode(log_probs, frame_lengths, self.vocab)):
                if text:
                    refs.append(text)
                    hyps.append(hyp)
        if not refs:
            log.warning("no dev utterance has a transcript: dev WER cannot be computed")
            return {"dev_loss": loss_sum / max(loss_n, 1)}
        rates = error_rates(refs, hyps)
        return {"dev_loss": loss_sum / max(loss_n, 1), "dev_wer": rates.wer, "dev_cer": rates.cer}

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        getattr(model, "module", model).save_pretrained(out_dir)
