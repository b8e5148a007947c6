"""``speechdistill finetune-ctc``: train a character CTC model on any encoder (SUPERB ASR protocol by default)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from speechdistill.asr.vocab import VOCAB_FILE, CharVocab
from speechdistill.config import ConfigError, to_dict
from speechdistill.data.dataset import DataConfig
from speechdistill.methods.ctc import CTCConfig, CTCMethod
from speechdistill.models.load import is_random_spec
from speechdistill.train.engine import TrainConfig
from speechdistill.train.engine import train as run_training
from speechdistill.train.optim import OptimConfig

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    out_dir: str = "runs/ctc"
    ctc: CTCConfig = field(default_factory=CTCConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_ratio=0.1))
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not self.out_dir:
            raise ConfigError("out_dir is required (--out DIR)")
        if not self.ctc.upstream:
            raise ConfigError("ctc.upstream is required (--upstream DIR|hub-id|random:FAMILY)")
        if not self.data.train_manifest:
            raise ConfigError("data.train_manifest is required (--train MANIFEST)")
        if self.data.crop_seconds:
            # A crop cuts audio but not its transcript: the CTC targets would no longer match.
            raise ConfigError("data.crop_seconds must be 0 for CTC fine-tuning (crops break transcript alignment)")


def build_vocab(train_manifest: str, out_dir: Path, resume: bool) -> CharVocab:
    """From the training transcripts; a resumed run reuses the vocabulary its checkpoints were made with."""
    from speechdistill.data.manifest import read_manifest

    saved = out_dir / VOCAB_FILE
    if resume and saved.is_file():
        log.info("resume: using the vocabulary in %s", saved)
        return CharVocab.load(saved)
    utts = read_manifest(train_manifest)
    texts = [u.text for u in utts]
    missing = sum(1 for t in texts if not t)
    if missing == len(texts):
        raise ConfigError(f"{train_manifest}: no utterance has a 'text' field; CTC fine-tuning needs transcripts")
    if missing:
        log.warning("%s: %d of %d utterance(s) have no transcript and will be skipped", train_manifest, missing, len(texts))
    vocab = CharVocab.build(texts)
    log.info("vocabulary: %d symbols (%s)", len(vocab), "".join(vocab.tokens[3:]))
    return vocab


def run_finetune(cfg: FinetuneConfig, resume: bool = False, overwrite: bool = False):
    """Train a CTC model; the best one by dev WER (or the final one) lands in ``out_dir/model``.

    A used ``out_dir`` needs ``resume`` or ``overwrite``; a busy one is refused (``train.run_dir``)."""
    from speechdistill.train.run_dir import claim_run_dir

    with claim_run_dir(cfg.out_dir, resume, overwrite) as out_dir:
        vocab = build_vocab(cfg.data.train_manifest, out_dir, resume)
        vocab.save(out_dir)
        if is_random_spec(cfg.ctc.upstream):
            log.info("training %s from scratch with CTC (encoder unfrozen)", cfg.ctc.upstream)
        method = CTCMethod(cfg.ctc, vocab, seed=cfg.train.seed)
        run_config = {**to_dict(cfg), "method": "ctc", "vocab": vocab.to_list()}
        return run_training(
            method, train_cfg=cfg.train, optim_cfg=cfg.optim, data_cfg=cfg.data, out_dir=out_dir,
            resume=resume, run_config=run_config,
        )
