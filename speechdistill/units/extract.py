"""Teacher features of one layer over a manifest, streamed batch by batch; k-means fitting and labelling.

Batches follow ``data.batch.make_batches`` in manifest order (no crops), each utterance's valid frames
only (padding never reaches k-means).  Labelling writes shards as it goes (``units.store.LabelWriter``)
and skips utterances a previous, interrupted run already labelled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from speechdistill import SAMPLE_RATE
from speechdistill.data.batch import make_batches
from speechdistill.data.dataset import AudioDataset, collate, raise_if_bad
from speechdistill.data.manifest import Utterance
from speechdistill.models.frames import config_output_lengths
from speechdistill.models.teacher import Teacher
from speechdistill.units.errors import UnitsError
from speechdistill.units.kmeans import KMeansModel
from speechdistill.units.store import LabelWriter

log = logging.getLogger(__name__)


def hop_samples(config) -> int:
    """Samples between consecutive frames (the product of the CNN strides: 320 for HuBERT/WavLM)."""
    return int(np.prod(config.conv_stride))


def check_layer(teacher: Teacher, layer: int) -> None:
    if not 0 <= layer <= teacher.num_layers:
        raise UnitsError(f"layer={layer} is out of range: the teacher {teacher.source} has layers 0..{teacher.num_layers} "
                         "(0 = the input of the first transformer layer)")


@torch.no_grad()
def layer_features(
    teacher: Teacher, layer: int, utts: Sequence[Utterance], max_batch_seconds: float = 120.0,
    max_batch_size: int = 32, on_bad_audio: str = "error", device: torch.device | str = "cpu",
    desc: str = "features", progress: bool = True, num_workers: int = 0,
) -> Iterator[tuple[Utterance, torch.Tensor]]:
    """(utterance, its layer-``layer`` features [frames, dim] on ``device``) in ``utts`` order."""
    ds = AudioDataset(utts, 0, on_bad_audio)
    sizes = [ds.item_samples(i) for i in range(len(utts))]
    batches = make_batches(sizes, int(max_batch_seconds * SAMPLE_RATE), max_batch_size, False, sort=False)
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate, num_workers=num_workers)
    by_id = {u.id: u for u in utts}
    bar = tqdm(total=len(utts), desc=desc, unit="utt", disable=not progress, dynamic_ncols=True)
    try:
        for batch in loader:
            raise_if_bad(batch, on_bad_audio)
            bar.update(len(batch) + len(batch.skipped))
            if not len(batch):
                continue
            batch = batch.to(device)
            out = teacher(batch.wav, batch.lengths, upto_layer=max(layer, 1))
            feats = out.hidden_states[layer]
            for i, utt_id in enumerate(batch.ids):
                yield by_id[utt_id], feats[i, : int(out.frame_lengths[i])]
    finally:
        bar.close()


def collect_fit_features(
    teacher: Teacher, layer: int, utts: Sequence[Utterance], max_frames: int, seed: int = 0, **kw,
) -> np.ndarray:
    """Features of utterances in a seeded random order until ``max_frames`` frames (float32 [N, dim])."""
    order = np.random.default_rng(seed).permutation(len(utts))
    hop = hop_samples(teacher.config)
    chosen, frames = [], 0
    for i in order:
        if frames >= max_frames:
            break
        chosen.append(utts[int(i)])
        frames += int(config_output_lengths(teacher.config, int(utts[int(i)].num_samples * SAMPLE_RATE
                                                                  / utts[int(i)].sample_rate)))
    log.info("fitting k-means on %d utterance(s), about %d frames (%.1f h)", len(chosen), frames,
             frames * hop / SAMPLE_RATE / 3600)
    parts, total = [], 0
    for _, f in layer_features(teacher, layer, chosen, desc="k-means features", **kw):
        parts.append(f.float().cpu().numpy())
        total += len(parts[-1])
    x = np.concatenate(parts)[:max_frames] if parts else np.zeros((0, teacher.hidden_size), np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def label_utterances(
    teacher: Teacher, layer: int, kmeans: KMeansModel, utts: Sequence[Utterance], writer: LabelWriter,
    stop_after: int = 0, **kw,
) -> bool:
    """Label the utterances ``writer`` has not seen yet; returns False when stopped early (``stop_after``
    shards written in this call: tests of interruption)."""
    todo = [u for u in utts if u.id not in writer.done]
    if len(todo) < len(utts):
        log.info("%d of %d utterance(s) already labelled; labelling the remaining %d", len(utts) - len(todo),
                 len(utts), len(todo))
    written = 0
    for utt, feats in layer_features(teacher, layer, todo, desc="unit labels", **kw):
        labels = kmeans.assign(feats).cpu().numpy()
        if writer.add(utt.id, labels):
            written += 1
            if stop_after and written >= stop_after:
                return False
    return True
