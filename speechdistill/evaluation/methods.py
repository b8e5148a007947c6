"""The training methods of the comparison's heads; the engine (``train.engine``) trains them like any
other method, with early stopping on the dev split, from cached features (``build_loaders``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speechdistill.asr.ctc_model import CONFIG_FILE, HEAD_FILE, CTCHeadConfig, CTCModel
from speechdistill.asr.vocab import CharVocab
from speechdistill.config import from_dict
from speechdistill.evaluation.feature_data import EvalFeatures, FeatureBatch, FeatureDataset, train_loader
from speechdistill.evaluation.heads import CachedStates, UtteranceHead
from speechdistill.evaluation.suite import UtteranceHeads
from speechdistill.methods.base import default_param_groups
from speechdistill.methods.ctc import CTCConfig, CTCMethod
from speechdistill.models.errors import ModelLoadError
from speechdistill.utils.io import atomic_dir, atomic_save_safetensors, atomic_write_json, load_safetensors

UTT_CONFIG = "head_config.json"
UTT_WEIGHTS = "head.safetensors"


class _CachedData:
    """``build_loaders`` for methods that train on cached features (the engine's optional hook)."""

    train_set: FeatureDataset
    dev_set: FeatureDataset

    def build_loaders(self, data_cfg, seed: int, rank: int, world_size: int):
        loader, sampler = train_loader(self.train_set, data_cfg.max_batch_seconds, data_cfg.max_batch_size,
                                       seed, rank, world_size)
        dev = EvalFeatures(self.dev_set, data_cfg.max_batch_seconds, data_cfg.max_batch_size)
        return loader, sampler, [], dev


class CachedCTCMethod(_CachedData, CTCMethod):
    """``methods.ctc.CTCMethod`` (loss, dev WER/CER, best-by-dev-WER) on cached states."""

    name = "asr-head"

    def __init__(self, head: CTCHeadConfig, vocab: CharVocab, seed: int, train_set: FeatureDataset,
                 dev_set: FeatureDataset, source: str = ""):
        super().__init__(CTCConfig(head=copy.deepcopy(head)), vocab, seed)
        self.train_set, self.dev_set, self.source = train_set, dev_set, source

    def build_model(self) -> CTCModel:
        fs = self.train_set.features
        torch.manual_seed(self.seed)
        return CTCModel(CachedStates(fs.num_states, fs.hidden_size, self.source), self.vocab,
                        copy.deepcopy(self.cfg.head), encoder_source=self.source)

    def log_probs(self, model: nn.Module, batch: FeatureBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch.states, batch.frame_lengths)

    # Dev WER, ties broken by dev CER: early in CTC training WER sits at 1.0 while CER already falls,
    # and early stopping must not read that plateau as convergence.
    best_metric = ("dev_wer_then_cer", "min")

    @torch.no_grad()
    def validate(self, model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        metrics = super().validate(model, batches)
        if "dev_wer" in metrics:
            metrics["dev_wer_then_cer"] = metrics["dev_wer"] + 1e-3 * metrics["dev_cer"]
        return metrics


def load_ctc_head(model_dir: Path, num_states: int, hidden_size: int) -> CTCModel:
    """A head written by ``CachedCTCMethod`` (its ``encoder/`` is only a note), in eval mode."""
    meta = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    model = CTCModel(CachedStates(num_states, hidden_size), CharVocab(list(meta["vocab"])),
                     from_dict(CTCHeadConfig, meta["head"], "head"))
    missing, unexpected = model.load_state_dict(load_safetensors(model_dir / HEAD_FILE), strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{model_dir}: head weights do not match (missing {missing}, unexpected {unexpected})")
    return model.eval()


class UtteranceMethod(_CachedData):
    """Cross-entropy on pooled states; the engine keeps the head with the best dev accuracy."""

    name = "utterance-head"
    # Dev accuracy, ties broken by dev loss (small dev sets tie often; a falling loss is still progress).
    best_metric = ("dev_acc_then_loss", "max")

    def __init__(self, heads: UtteranceHeads, classes: list[str], seed: int, train_set: FeatureDataset,
                 dev_set: FeatureDataset):
        self.heads, self.classes, self.seed = heads, classes, seed
        self.train_set, self.dev_set = train_set, dev_set

    def build_model(self) -> UtteranceHead:
        fs = self.train_set.features
        torch.manual_seed(self.seed)
        h = self.heads
        return UtteranceHead(fs.num_states, fs.hidden_size, len(self.classes), h.hidden, h.dropout, h.normalize_states)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return default_param_groups(model, lr, weight_decay)

    def compute_loss(self, model: nn.Module, batch: FeatureBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch.states)
        loss = F.cross_entropy(logits.float(), batch.labels)
        acc = float((logits.argmax(-1) == batch.labels).float().mean())
        return loss, {"acc": acc}

    @torch.no_grad()
    def validate(self, model: nn.Module, batches: Iterable[FeatureBatch]) -> dict[str, float]:
        correct, total, loss_sum = 0, 0, 0.0
        for batch in batches:
            logits = model(batch.states)
            loss_sum += float(F.cross_entropy(logits.float(), batch.labels, reduction="sum"))
            correct += int((logits.argmax(-1) == batch.labels).sum())
            total += len(batch)
        acc, loss = correct / max(total, 1), loss_sum / max(total, 1)
        return {"dev_acc": acc, "dev_loss": loss, "dev_acc_then_loss": acc - 1e-6 * min(loss, 100.0)}

    def save_artifact(self, model: nn.Module, out_dir: Path) -> None:
        model = getattr(model, "module", model)
        fs = self.train_set.features
        with atomic_dir(out_dir) as tmp:
            atomic_save_safetensors(tmp / UTT_WEIGHTS, model.state_dict())
            atomic_write_json(tmp / UTT_CONFIG, {
                "head": asdict(self.heads), "classes": self.classes, "num_states": fs.num_states,
                "hidden_size": fs.hidden_size, "layer_weights": model.layer_weight_list(),
            })


def load_utterance_head(model_dir: Path) -> tuple[UtteranceHead, list[str]]:
    meta = json.loads((model_dir / UTT_CONFIG).read_text(encoding="utf-8"))
    h = from_dict(UtteranceHeads, meta["head"], "head")
    model = UtteranceHead(meta["num_states"], meta["hidden_size"], len(meta["classes"]), h.hidden, h.dropout,
                          h.normalize_states)
    model.load_state_dict(load_safetensors(model_dir / UTT_WEIGHTS))
    return model.eval(), list(meta["classes"])
