"""HuBERT's masked prediction of discrete units (Hsu et al., 2021), shared by ``wid`` and ``masked_units``.

- Span masking: per utterance ``int(mask_prob * frames / mask_length + U(0, 1))`` spans (at least
  ``min_masks``) of ``mask_length`` frames start at distinct random frames; spans may overlap (about
  half the frames end up masked at ``mask_prob=0.8``).  Masked frames of the projected CNN features are
  replaced by a learned mask embedding (HuBERT masks after the feature projection).
- Prediction: the last layer's output goes through a linear projection to ``final_dim``; logits are the
  cosine similarities with learned unit embeddings divided by a temperature; cross-entropy on masked
  frames (``nomask_weight`` adds unmasked frames; HuBERT Base uses 0).
- Targets: unit labels of the *uncropped* utterance (``speechdistill units``), aligned with a random crop
  by its sample offset: frame offset ``round(offset / hop)``, as fairseq's HuBERT does, so a crop's
  labels may be off by up to half a frame (10 ms).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechdistill.data.batch import Batch
from speechdistill.models.compactor import RESIDUAL, DecayTarget, WidthMasks
from speechdistill.models.encoder import EncoderOutput, hf_model_of
from speechdistill.models.frames import config_output_lengths
from speechdistill.units.errors import UnitsError
from speechdistill.units.store import UnitLabels

IGNORE = -100


@dataclass
class MaskedPredictionConfig:
    labels: str = ""  # label folder of the training manifest (`speechdistill units`)
    dev_labels: str = ""  # label folder of the dev manifest; empty: no dev metrics
    mask_prob: float = 0.8
    mask_length: int = 10
    min_masks: int = 2
    final_dim: int = 256
    logit_temp: float = 0.1
    nomask_weight: float = 0.0

    def validate(self) -> None:
        if not 0 < self.mask_prob <= 1:
            raise ValueError("masked_prediction.mask_prob must be in (0, 1]")
        if self.mask_length < 1 or self.min_masks < 0 or self.final_dim < 1:
            raise ValueError("masked_prediction.mask_length and final_dim must be >= 1, min_masks >= 0")
        if self.logit_temp <= 0 or self.nomask_weight < 0:
            raise ValueError("masked_prediction.logit_temp must be > 0 and nomask_weight >= 0")


def span_mask(
    frame_lengths: torch.Tensor, max_frames: int, prob: float, length: int, min_masks: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean [B, max_frames] span mask over each utterance's valid frames (CPU)."""
    mask = torch.zeros(len(frame_lengths), max_frames, dtype=torch.bool)
    for b, n in enumerate(frame_lengths.tolist()):
        starts_possible = n - length + 1
        if starts_possible <= 0:
            continue  # shorter than one span: left unmasked (it adds no masked-prediction loss)
        u = float(torch.rand((), generator=generator))
        count = min(max(int(prob * n / length + u), min_masks), starts_possible)
        starts = torch.randperm(starts_possible, generator=generator)[:count]
        idx = (starts[:, None] + torch.arange(length)[None, :]).reshape(-1)
        mask[b, idx] = True
    return mask


class UnitPredictionHead(nn.Module):
    """Mask embedding, projection and unit embeddings; cosine logits over all units."""

    def __init__(self, hidden: int, num_units: int, final_dim: int, logit_temp: float,
                 mask_embedding: torch.Tensor | None = None, masks: WidthMasks | None = None):
        super().__init__()
        emb = mask_embedding.detach().clone().float() if mask_embedding is not None else torch.empty(hidden).uniform_()
        self.mask_embedding = nn.Parameter(emb)
        self.proj = nn.Linear(hidden, final_dim)
        self.unit_embeddings = nn.Parameter(torch.empty(num_units, final_dim).uniform_(-1, 1))
        self.logit_temp = logit_temp
        # WID: the head reads the residual stream, so its input columns follow the residual mask.
        self._masks_ref = (masks,)

    def _residual_keep(self) -> torch.Tensor | None:
        m = self._masks_ref[0]
        return m.residual if m is not None and m.hard else None

    def masked_input(self, x: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        emb = self.mask_embedding.to(x.dtype)
        keep = self._residual_keep()
        if keep is not None:
            emb = emb * keep.to(emb.dtype)
        return torch.where(span[..., None], emb, x)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = self.proj.weight
        keep = self._residual_keep()
        if keep is not None:
            w = w * keep[None, :].to(w.dtype)
        z = F.linear(h, w, self.proj.bias).float()
        cos = F.normalize(z, dim=-1, eps=1e-8) @ F.normalize(self.unit_embeddings.float(), dim=-1, eps=1e-8).T
        return cos / self.logit_temp

    def decay_targets(self) -> list[DecayTarget]:
        m = self._masks_ref[0]
        if m is None:
            return []
        return [(self.mask_embedding, lambda: m.keep(RESIDUAL)), (self.proj.weight, lambda: m.keep(RESIDUAL)[None, :])]


class MaskedPredictionStudent(nn.Module):
    """An encoder plus the unit head; ``forward`` masks spans after the feature projection (a forward hook
    on it), encodes, and returns the logits of the ``select``-ed frames (DDP sees one forward)."""

    def __init__(self, encoder: nn.Module, head: UnitPredictionHead):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self._span: torch.Tensor | None = None
        hf_model_of(encoder).feature_projection.register_forward_hook(self._mask_spans)

    def _mask_spans(self, _module, _args, output):
        if self._span is None:
            return None
        if isinstance(output, tuple):  # wav2vec 2.0 / WavLM also return the normalised CNN features
            return (self.head.masked_input(output[0], self._span), *output[1:])
        return self.head.masked_input(output, self._span)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, span: torch.Tensor, select: torch.Tensor
                ) -> tuple[torch.Tensor, EncoderOutput]:
        self._span = span
        try:
            out = self.encoder.encode(wav, lengths)
        finally:
            self._span = None
        last = out.last_hidden_state if out.last_hidden_state is not None else out.hidden_states[-1]
        return self.head(last[select]), out


class UnitTargets:
    """Per-frame unit labels of a batch from a label folder, aligned with crops (see module doc)."""

    def __init__(self, folder: str, student_config):
        self.labels = UnitLabels(folder)
        self.hop = int(np.prod(student_config.conv_stride))
        if self.hop != self.labels.hop:
            raise UnitsError(
                f"the unit labels in {folder} have one label per {self.labels.hop} samples but the student's CNN "
                f"makes a frame every {self.hop} samples: label the manifest with a teacher of the same frame rate"
            )

    @property
    def num_units(self) -> int:
        return self.labels.k

    def batch(self, batch: Batch, frame_lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
        out = torch.full((len(batch), max_frames), IGNORE, dtype=torch.long)
        offsets = batch.offsets.tolist() if batch.offsets is not None else [0] * len(batch)
        for i, (utt_id, n) in enumerate(zip(batch.ids, frame_lengths.tolist())):
            lab = self.labels[utt_id]
            start = round(offsets[i] / self.hop)
            avail = len(lab) - start
            # A crop's rounded offset can reach one frame past the labels' end; more means other audio.
            if n > avail + (1 if offsets[i] else 0):
                raise UnitsError(
                    f"unit labels of {utt_id!r} cover {len(lab)} frames but the batch needs {n} from frame {start}: "
                    f"the labels in {self.labels.folder} were made for other audio (rerun `speechdistill units`)"
                )
            take = min(n, avail)
            out[i, :take] = torch.from_numpy(lab[start : start + take])
        return out


class MaskedPredictionMethod:
    """Loss, validation and plumbing of masked unit prediction; subclasses build the student."""

    name = "masked_prediction"
    best_metric = None

    def __init__(self, cfg: MaskedPredictionConfig):
        self.mp = cfg
        self._val_generator_seed = 1234
        self.student_config = None  # set by build_model: the HF config of the student's encoder
        self.targets: UnitTargets | None = None
        self.dev_targets: UnitTargets | None = None

    def attach_targets(self, student_config) -> None:
        self.student_config = student_config
        self.targets = UnitTargets(self.mp.labels, student_config)
        if self.mp.dev_labels:
            self.dev_targets = UnitTargets(self.mp.dev_labels, student_config)
            if self.dev_targets.num_units != self.targets.num_units:
                raise UnitsError(f"{self.mp.dev_labels} has k={self.dev_targets.num_units} units but "
                                 f"{self.mp.labels} has k={self.targets.num_units}: label both with one k-means model")

    def _inputs(self, batch: Batch, generator: torch.Generator | None, targets: UnitTargets):
        cfg = self.student_config
        frame_lengths = config_output_lengths(cfg, batch.lengths.cpu()).long()
        max_frames = int(config_output_lengths(cfg, int(batch.wav.shape[1])))
        span = span_mask(frame_lengths, max_frames, self.mp.mask_prob, self.mp.mask_length, self.mp.min_masks,
                         generator)
        labels = targets.batch(batch, frame_lengths, max_frames)
        dev = batch.wav.device
        return span.to(dev), labels.to(dev)

    def _loss(self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None,
              targets: UnitTargets | None = None):
        span, labels = self._inputs(batch, generator, targets or self.targets)
        valid = labels != IGNORE
        select = valid if self.mp.nomask_weight else (valid & span)
        logits, _ = model(batch.wav, batch.lengths, span, select)
        target = labels[select]
        is_masked = span[select]
        ce = F.cross_entropy(logits, target, reduction="none")
        n_m = is_masked.sum().clamp(min=1)
        loss_m = (ce * is_masked).sum() / n_m
        loss = loss_m
        metrics = {"loss_masked": float(loss_m.detach()), "masked_frames": float(is_masked.sum())}
        if self.mp.nomask_weight:
            n_u = (~is_masked).sum().clamp(min=1)
            loss_u = (ce * ~is_masked).sum() / n_u
            loss = loss + self.mp.nomask_weight * loss_u
            metrics["loss_unmasked"] = float(loss_u.detach())
        with torch.no_grad():
            correct = (logits.argmax(-1) == target) & is_masked
            metrics["acc_masked"] = float(correct.sum() / n_m)
        return loss, metrics

    def compute_loss(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        return self._loss(model, batch)

    @torch.no_grad()
    def validate(self, model: nn.Module, batches) -> dict[str, float]:
        # The same spans every validation: dev metrics compare across steps and runs.
        if self.dev_targets is None:
            return {}  # no dev labels (masked_prediction.dev_labels)
        gen = torch.Generator().manual_seed(self._val_generator_seed)
        sums: dict[str, float] = defaultdict(float)
        weight = 0.0
        for batch in batches:
            loss, metrics = self._loss(model, batch, gen, self.dev_targets)
            w = max(metrics["masked_frames"], 1.0)
            sums["dev_loss"] += float(loss) * w
            for k, v in metrics.items():
                if k != "masked_frames":
                    sums[f"dev_{k}"] += v * w
            weight += w
        return {k: v / max(weight, 1.0) for k, v in sums.items()}
