"""``CTCModel``: any project encoder + SUPERB-style weighted layer sum + a CTC head.

SUPERB ASR (Yang et al., Interspeech 2021): the upstream is frozen, a learnable softmax-weighted sum of all its
hidden states feeds a 2-layer BiLSTM (1024) and a linear layer to characters, trained with CTC.
Here the head width is configurable (the default is smaller so it trains on a CPU), a linear head
is available for quick probes, and the encoder can be unfrozen for full fine-tuning.

Directory layout written by ``save_pretrained``::

    encoder/              the encoder's own save_pretrained (loadable with load_encoder)
    ctc_head.safetensors  layer weights, head and output layer
    ctc_config.json       head config, vocabulary, layer weights (softmaxed), provenance
    vocab.json            HF-style token -> id (plus vocab_meta.json)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechdistill.asr.vocab import CharVocab, VocabError
from speechdistill.config import ConfigError, check_ranges, from_dict, parse_inline_mapping
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.load import is_random_spec
from speechdistill.utils.io import (
    atomic_dir,
    atomic_save_safetensors,
    atomic_write_json,
    load_safetensors,
    read_json,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "ctc_config.json"
HEAD_FILE = "ctc_head.safetensors"
ENCODER_DIR = "encoder"
FORMAT = "speechdistill-ctc"
FORMAT_VERSION = 1


@dataclass
class CTCHeadConfig:
    head: Literal["linear", "bilstm"] = "bilstm"
    # SUPERB uses 1024 units and 2 layers; 256 keeps CPU fine-tuning affordable.
    lstm_hidden: int = 256
    lstm_layers: int = 2
    # Optional linear projection of the encoder features before the head (0 = none).
    proj_dim: int = 0
    dropout: float = 0.2
    layer_select: Literal["weighted", "last"] = "weighted"
    # Layer-normalise each hidden state before weighting (s3prl's optional feature normalisation).
    normalize_states: bool = False
    freeze_encoder: bool = True
    # Only used when the encoder is unfrozen: the CNN front end usually stays fixed (HF's freeze_feature_encoder).
    freeze_cnn: bool = True
    # SpecAugment-style masking of the weighted features, in training only.
    specaugment: bool = False
    num_time_masks: int = 2
    time_mask_width: int = 10  # frames (20 ms each); at most max_time_mask_ratio of the utterance
    max_time_mask_ratio: float = 0.2
    num_feat_masks: int = 2
    feat_mask_ratio: float = 0.1  # each feature mask at most this fraction of the dimensions

    def validate(self) -> None:
        check_ranges(
            "ctc.head", self, lstm_hidden=">=1", lstm_layers=">=1", proj_dim=">=0", dropout="[0,1)",
            num_time_masks=">=0", time_mask_width=">=0", num_feat_masks=">=0", max_time_mask_ratio="[0,1]",
            feat_mask_ratio="[0,1]", hints={"proj_dim": "0 = no projection"},
        )


# ---------------------------------------------------------------------------------------------
# Upstream construction


def parse_upstream_config(spec: str | dict[str, Any] | None) -> dict[str, Any]:
    """HF config keys for a ``random:FAMILY`` upstream: ``key=value,key=value`` (values parsed as YAML),
    a JSON file path, or a dict."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"upstream config file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"{path}: invalid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of config keys")
        return data
    return parse_inline_mapping(spec, what="upstream config")


def build_upstream(upstream: str, upstream_config: str | dict[str, Any] | None = None, seed: int = 0) -> nn.Module:
    """An encoder from any spec ``load_encoder`` reads (``random:FAMILY`` takes ``upstream_config``)."""
    from speechdistill.models.load import is_random_spec, load_encoder
    from speechdistill.models.teacher import disable_layerdrop

    if upstream_config and not is_random_spec(upstream):
        raise ConfigError("--upstream-config only applies to random:FAMILY upstreams")
    overrides = parse_upstream_config(upstream_config) if is_random_spec(upstream) else None
    return disable_layerdrop(load_encoder(upstream, seed=seed, config_overrides=overrides))


# ---------------------------------------------------------------------------------------------
# SpecAugment on features


def spec_augment(feats: torch.Tensor, frame_lengths: torch.Tensor, cfg: CTCHeadConfig) -> torch.Tensor:
    """Zero random time spans and feature bands per utterance.

    Widths are capped by each utterance's length (very short clips crash naive time
    masking, a common SpecAugment bug), so a 3-frame utterance simply gets no time mask.
    """
    B, T, D = feats.shape
    keep = torch.ones(B, T, D, dtype=feats.dtype, device=feats.device)
    for b in range(B):
        n = int(frame_lengths[b])
        max_w = min(cfg.time_mask_width, int(n * cfg.max_time_mask_ratio))
        if max_w >= 1:
            for _ in range(cfg.num_time_masks):
                w = int(torch.randint(0, max_w + 1, ()))
                if w == 0:
                    continue
                start = int(torch.randint(0, n - w + 1, ()))
                keep[b, start : start + w, :] = 0
        max_f = int(D * cfg.feat_mask_ratio)
        if max_f >= 1:
            for _ in range(cfg.num_feat_masks):
                w = int(torch.randint(0, max_f + 1, ()))
                if w == 0:
                    continue
                start = int(torch.randint(0, D - w + 1, ()))
                keep[b, :, start : start + w] = 0
    return feats * keep


# ---------------------------------------------------------------------------------------------
# The model


class CTCModel(nn.Module):
    """Encoder + weighted layer sum + (BiLSTM) head + output layer; ``forward`` gives fp32 log-probs."""

    def __init__(
        self,
        encoder: nn.Module,
        vocab: CharVocab,
        config: CTCHeadConfig | None = None,
        encoder_source: str = "",
    ):
        super().__init__()
        self.encoder = encoder
        self.vocab = vocab
        self.head_config = config or CTCHeadConfig()
        self.head_config.validate()
        self.encoder_source = encoder_source
        cfg = self.head_config
        self.num_states = int(encoder.num_output_layers) + 1
        dim = int(encoder.hidden_size)
        # Zeros -> uniform softmax weights at the start, as in s3prl's featurizer.
        self.layer_weights = nn.Parameter(torch.zeros(self.num_states))
        self.proj = nn.Linear(dim, cfg.proj_dim) if cfg.proj_dim else None
        feat_dim = cfg.proj_dim or dim
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.head == "bilstm":
            self.lstm: nn.LSTM | None = nn.LSTM(
                feat_dim, cfg.lstm_hidden, num_layers=cfg.lstm_layers, batch_first=True, bidirectional=True,
                dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0,
            )
            out_dim = 2 * cfg.lstm_hidden
        else:
            self.lstm = None
            out_dim = feat_dim
        self.output = nn.Linear(out_dim, len(vocab))
        self._apply_freezing()

    # -- freezing -------------------------------------------------------------------------------

    @property
    def encoder_frozen(self) -> bool:
        return self.head_config.freeze_encoder

    def _apply_freezing(self) -> None:
        cfg = self.head_config
        if cfg.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
            return
        self.encoder.requires_grad_(True)
        if cfg.freeze_cnn:
            cnn = [m for name, m in self.encoder.named_modules() if name.split(".")[-1] == "feature_extractor"]
            if not cnn:
                log.warning("freeze_cnn: no 'feature_extractor' module in %s; the whole encoder trains",
                            type(self.encoder).__name__)
            for m in cnn:
                m.requires_grad_(False)

    def train(self, mode: bool = True) -> CTCModel:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()  # no dropout in a frozen upstream, as in SUPERB
        return self

    # -- forward --------------------------------------------------------------------------------

    def features(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted (or last) hidden states [B, T, D] and frame lengths [B]."""
        if self.encoder_frozen:
            with torch.no_grad():
                out = self.encoder.encode(wav, lengths)
        else:
            out = self.encoder.encode(wav, lengths)
        states = list(out.hidden_states)
        if len(states) != self.num_states:
            raise RuntimeError(
                f"encoder returned {len(states)} hidden states, the CTC model expects {self.num_states}"
            )
        # Stable-layer-norm models apply a final LayerNorm after the last layer; HF's hidden_states
        # (and so SUPERB) use that normalised output as the last state.
        last = out.last_hidden_state
        if last is not None and last.shape == states[-1].shape:
            states[-1] = last
        if self.head_config.layer_select == "last":
            feats = states[-1]
            if self.head_config.normalize_states:
                feats = F.layer_norm(feats, feats.shape[-1:])
        else:
            weights = self.layer_weights.softmax(0)
            feats = None
            for w, h in zip(weights, states):
                if self.head_config.normalize_states:
                    h = F.layer_norm(h, h.shape[-1:])
                feats = w * h if feats is None else feats + w * h
        return feats, out.frame_lengths.to(feats.device)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_probs [B, T, V] float32, frame_lengths [B])``."""
        feats, frame_lengths = self.features(wav, lengths)
        if self.training and self.head_config.specaugment:
            feats = spec_augment(feats, frame_lengths, self.head_config)
        if self.proj is not None:
            feats = self.proj(feats)
        x = self.dropout(feats)
        if self.lstm is not None:
            T = x.shape[1]
            # Packing keeps the backward direction from reading padding frames first.
            packed = nn.utils.rnn.pack_padded_sequence(
                x, frame_lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
            )
            y, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
            x = self.dropout(x)
        # CTC needs fp32 log-probs even under bf16 autocast: in half precision it overflows to NaN.
        logits = self.output(x).float()
        return logits.log_softmax(dim=-1), frame_lengths

    # -- bookkeeping ----------------------------------------------------------------------------

    def num_parameters(self) -> dict[str, int]:
        enc = sum(p.numel() for p in self.encoder.parameters())
        total = sum(p.numel() for p in self.parameters())
        return {"encoder": enc, "head": total - enc, "total": total}

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def layer_weight_list(self) -> list[float]:
        return [float(w) for w in self.layer_weights.detach().float().softmax(0).cpu()]

    # -- files ----------------------------------------------------------------------------------

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write the directory atomically: a crash leaves the previous model or the new one, never a mix."""
        with atomic_dir(out_dir) as tmp:
            self._write(tmp)

    def _write(self, d: Path) -> None:
        self.encoder.save_pretrained(d / ENCODER_DIR)
        atomic_save_safetensors(d / HEAD_FILE, self.head_state_dict(), metadata={"format": FORMAT})
        self.vocab.save(d)
        atomic_write_json(
            d / CONFIG_FILE,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "head": asdict(self.head_config),
                "vocab": self.vocab.to_list(),
                "num_states": self.num_states,
                "hidden_size": int(self.encoder.hidden_size),
                "layer_weights": self.layer_weight_list(),
                "encoder_class": type(self.encoder).__name__,
                "encoder_source": self.encoder_source,
                "num_parameters": self.num_parameters(),
            },
        )

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, map_location: str | torch.device = "cpu") -> CTCModel:
        """Load a CTC model directory strictly: a bad ``ctc_config.json``, encoder or head is a
        ModelLoadError naming the file and what is wrong with it."""
        from speechdistill.models.builtin import resolve_model_path
        from speechdistill.models.load import load_encoder
        from speechdistill.models.weights import check_finite, check_state_dict_match

        model_dir = Path(resolve_model_path(str(model_dir)))
        if not model_dir.is_dir():
            raise ModelLoadError(f"model directory {model_dir} does not exist" if not model_dir.exists() else
                                 f"{model_dir} is not a folder (a CTC model directory from `speechdistill finetune-ctc`)")
        cfg_file = model_dir / CONFIG_FILE
        if not cfg_file.is_file():
            raise ModelLoadError(
                f"{model_dir}: not a CTC model directory (no {CONFIG_FILE}); train one with "
                "`speechdistill finetune-ctc`"
            )
        try:
            meta = read_json(cfg_file, expect=dict)
        except ValueError as e:
            raise ModelLoadError(str(e)) from None
        if meta.get("format") != FORMAT or not isinstance(meta.get("format_version"), int) \
                or meta["format_version"] > FORMAT_VERSION:
            raise ModelLoadError(
                f"{cfg_file}: format {meta.get('format')!r} v{meta.get('format_version')} is not readable by "
                f"this version (expects {FORMAT} v{FORMAT_VERSION} or older)"
            )
        missing = [k for k in ("head", "vocab") if k not in meta]
        if missing or not isinstance(meta["head"], dict):
            raise ModelLoadError(f"{cfg_file}: {'missing ' + ', '.join(missing) if missing else 'head is not an object'}")
        try:
            head_cfg = from_dict(CTCHeadConfig, meta["head"], "head")
            vocab = CharVocab(meta["vocab"])
        except (ConfigError, VocabError) as e:
            raise ModelLoadError(f"{cfg_file}: {e}") from None
        encoder = load_encoder(model_dir / ENCODER_DIR)
        model = cls(encoder, vocab, head_cfg, encoder_source=str(meta.get("encoder_source", "")))
        head_file = model_dir / HEAD_FILE
        if not head_file.is_file():
            raise ModelLoadError(f"{model_dir}: missing {HEAD_FILE}")
        state = load_safetensors(head_file, device=str(map_location))
        # The head's tensors only: the encoder's came from its own folder above.
        own = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
        mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                      if k in own and tuple(v.shape) != tuple(own[k].shape)]
        check_state_dict_match(f"{head_file} (against {CONFIG_FILE})", set(own) - set(state), set(state) - set(own),
                               mismatched)
        model.load_state_dict(state, strict=False)
        check_finite(model, str(head_file))
        return model.to(map_location).eval()


def build_ctc_model(
    upstream: str,
    vocab: CharVocab,
    head: CTCHeadConfig | None = None,
    upstream_config: str | dict[str, Any] | None = None,
    seed: int = 0,
) -> CTCModel:
    """A fresh CTC model on ``upstream`` (directory, hub id or ``random:FAMILY``)."""
    if not upstream:
        raise ConfigError("no upstream given: pass --upstream DIR|hub-id|random:FAMILY")
    head = head or CTCHeadConfig()
    if is_random_spec(upstream) and head.freeze_encoder:
        # A frozen random encoder gives nothing to learn from: training from scratch means unfrozen.
        log.info("random upstream: unfreezing the encoder (and its CNN)")
        head = CTCHeadConfig(**{**asdict(head), "freeze_encoder": False, "freeze_cnn": False})
    encoder = build_upstream(upstream, upstream_config or None, seed)
    torch.manual_seed(seed)
    return CTCModel(encoder, vocab, head, encoder_source=upstream)
