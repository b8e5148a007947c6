"""Calibration data and activation statistics for retraining-free pruning.

One forward pass over the calibration set records, for every layer at once (the global threshold
needs all layers before any is cut): the FFN's post-activation outputs, the attention's per-head
context before ``out_proj``, optionally the CNN's post-activation channels, and the squared norm
of the residual stream each module writes into.  Padding frames are excluded via the frame mask;
the CNN of group-norm models runs per utterance in ``hf_encode`` and so never sees padding.
Statistics come from the unpruned model (a single pass; our design: re-running the calibration
after each pruned layer would multiply the cost by the layer count).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speechdistill import SAMPLE_RATE
from speechdistill.data.audio import MIN_SAMPLES, load_utterance
from speechdistill.data.batch import make_batches as make_index_batches
from speechdistill.data.batch import pad_waveforms
from speechdistill.data.errors import BadAudioError
from speechdistill.data.manifest import Utterance, read_manifest
from speechdistill.models.encoder import hf_encode
from speechdistill.models.frames import config_output_lengths, frame_mask
from speechdistill.prune.budget import PruneError
from speechdistill.prune.decompose import FrameSketch

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Calibration audio


def select_utterances(manifest: str | Path, num_calib: int, seed: int = 0) -> list[Utterance]:
    """A seeded random subset of ``num_calib`` utterances (all of them when the manifest is smaller)."""
    utts = [u for u in read_manifest(manifest) if u.num_samples * SAMPLE_RATE / u.sample_rate >= MIN_SAMPLES]
    if not utts:
        raise PruneError(f"{manifest}: no utterance is long enough ({MIN_SAMPLES} samples) for calibration")
    if num_calib <= 0:
        raise PruneError(f"--num-calib must be positive, got {num_calib}")
    if len(utts) > num_calib:
        idx = np.random.default_rng(seed).choice(len(utts), size=num_calib, replace=False)
        utts = [utts[i] for i in sorted(idx)]
    elif len(utts) < num_calib:
        log.info("calibration manifest has %d usable utterances (asked for %d): using all", len(utts), num_calib)
    return utts


def _crop_len(n: int, max_seconds: float | None) -> int:
    if max_seconds is None:
        return n
    return min(n, max(MIN_SAMPLES, round(max_seconds * SAMPLE_RATE)))


def manifest_lengths(
    manifest: str | Path, num_calib: int = 256, max_seconds: float | None = None, seed: int = 0
) -> list[int]:
    """16 kHz sample counts of the calibration utterances, from the manifest alone (no audio read)."""
    utts = select_utterances(manifest, num_calib, seed)
    return [_crop_len(round(u.num_samples * SAMPLE_RATE / u.sample_rate), max_seconds) for u in utts]


def load_calibration_audio(
    manifest: str | Path, num_calib: int = 256, max_seconds: float | None = None, seed: int = 0
) -> list[np.ndarray]:
    """Load (and crop to ``max_seconds``, at a seeded random offset) the calibration utterances."""
    rng = np.random.default_rng(seed + 1)
    wavs = []
    for u in select_utterances(manifest, num_calib, seed):
        try:
            wav = load_utterance(u)
        except BadAudioError as e:
            log.warning("skipping calibration utterance %s: %s", u.id, e)
            continue
        n = _crop_len(len(wav), max_seconds)
        start = int(rng.integers(0, len(wav) - n + 1)) if n < len(wav) else 0
        wavs.append(np.ascontiguousarray(wav[start : start + n]))
    if not wavs:
        raise PruneError(f"{manifest}: none of the calibration utterances could be read")
    return wavs


def _calib_batches(wavs: Sequence[np.ndarray], batch_seconds: float) -> list[list[int]]:
    """Index groups of similar lengths, at most ``batch_seconds`` of padded audio each."""
    budget = max(1, int(batch_seconds * SAMPLE_RATE))
    return make_index_batches([len(w) for w in wavs], budget, max(1, len(wavs)), shuffle=False)


def make_batches(wavs: Sequence[np.ndarray], batch_seconds: float = 40.0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Padded (wav [B, S], lengths [B]) batches of similar lengths (see ``_calib_batches``)."""
    for idx in _calib_batches(wavs, batch_seconds):
        yield pad_waveforms([wavs[j] for j in idx])


def num_batches(wavs: Sequence[np.ndarray], batch_seconds: float = 40.0) -> int:
    return len(_calib_batches(wavs, batch_seconds))


# ---------------------------------------------------------------------------------------------
# Activation statistics


@dataclass
class CalibStats:
    ffn: list[FrameSketch]  # per layer: post-activation FFN outputs (frames x neurons)
    attn: list[FrameSketch]  # per layer: context before out_proj (frames x heads*head_dim)
    conv: list[FrameSketch]  # per conv layer whose channels may be pruned (all but the last)
    attn_ref_sq: list[float]  # squared norm of the residual stream the attention writes into
    ffn_ref_sq: list[float]
    sample_lengths: list[int] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


@contextmanager
def wavlm_calibration_attention(model: nn.Module):
    """Temporarily route stock WavLM attention through ``PrunedWavLMAttention`` (sharing the
    parameters), whose ``out_proj`` is a real module call the hooks can see (stock WavLM calls
    ``F.multi_head_attention_forward`` with the raw weights)."""
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    from speechdistill.models.pruned import PrunedWavLMAttention

    swapped = []
    for layer in model.encoder.layers:
        if isinstance(layer.attention, WavLMAttention):
            swapped.append((layer, layer.attention))
            layer.attention = PrunedWavLMAttention.from_stock(layer.attention, share=True)
    try:
        yield
    finally:
        for layer, attn in swapped:
            layer.attention = attn


def collect_statistics(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    normalize: bool = False,
    sketch_rows: int = 4096,
    prune_cnn: bool = False,
    seed: int = 0,
    progress: bool = False,
    total_batches: int | None = None,
) -> CalibStats:
    """Run the HF base ``model`` once over ``batches`` and sketch every prunable module's activations."""
    cfg = model.config
    layers = model.encoder.layers
    stable = bool(getattr(cfg, "do_stable_layer_norm", False))
    stats = CalibStats(
        ffn=[FrameSketch(l.feed_forward.output_dense.in_features, sketch_rows, seed + 2 * i) for i, l in enumerate(layers)],
        attn=[FrameSketch(l.attention.out_proj.in_features, sketch_rows, seed + 2 * i + 1) for i, l in enumerate(layers)],
        conv=[],
        attn_ref_sq=[0.0] * len(layers),
        ffn_ref_sq=[0.0] * len(layers),
    )
    convs = model.feature_extractor.conv_layers
    if prune_cnn:
        stats.conv = [FrameSketch(c.conv.out_channels, sketch_rows, seed + 1000 + i) for i, c in enumerate(convs[:-1])]
    state: dict[str, torch.Tensor] = {}

    def valid(x: torch.Tensor) -> torch.Tensor:
        return x[state["mask"]]

    def sq(x: torch.Tensor) -> float:
        v = valid(x)
        return float(torch.sum(v.float() * v.float()))

    handles = []
    for i, layer in enumerate(layers):

        def layer_pre(_m, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            s = sq(x)
            stats.attn_ref_sq[i] += s
            if stable:  # pre-LN: the FFN also writes into (about) the layer's residual stream
                stats.ffn_ref_sq[i] += s

        def ffn_pre(_m, args, i=i):
            if not stable:  # post-LN: the FFN's input is the stream its output is added to
                stats.ffn_ref_sq[i] += sq(args[0])

        def z_pre(_m, args, i=i):
            stats.ffn[i].add(valid(args[0]))

        def ctx_pre(_m, args, i=i):
            stats.attn[i].add(valid(args[0]))

        handles.append(layer.register_forward_pre_hook(layer_pre, with_kwargs=True))
        handles.append(layer.feed_forward.register_forward_pre_hook(ffn_pre))
        handles.append(layer.feed_forward.output_dense.register_forward_pre_hook(z_pre))
        handles.append(layer.attention.out_proj.register_forward_pre_hook(ctx_pre))
    for i, sk in enumerate(stats.conv):

        def conv_post(_m, _args, out, sk=sk):
            # [B, C, L]: group-norm CNNs run one unpadded utterance at a time (or equal lengths).
            sk.add(out.transpose(1, 2).reshape(-1, out.shape[1]))

        handles.append(convs[i].register_forward_hook(conv_post))

    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, total=total_batches, desc="calibration", unit="batch")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), wavlm_calibration_attention(model):
            for wav, lengths in it:
                frames = config_output_lengths(cfg, lengths).long()
                state["mask"] = frame_mask(frames, int(config_output_lengths(cfg, wav.shape[1])))
                hf_encode(model, wav, lengths, normalize=normalize)
                stats.sample_lengths.extend(int(n) for n in lengths)
                stats.frames += int(frames.sum())
                stats.seconds += float(lengths.sum()) / SAMPLE_RATE
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not stats.sample_lengths:
        raise PruneError("no calibration batches were given")
    for name, sketches in (("FFN", stats.ffn), ("attention", stats.attn)):
        seen = [sk.frames for sk in sketches]
        if any(n != stats.frames for n in seen):  # a hook that never fired would silently prune blind
            raise RuntimeError(f"calibration saw {stats.frames} frames but recorded {seen} {name} frames per layer")
    if any(sk.is_sketched for sk in stats.ffn):
        log.info(
            "calibration: %d utterances, %.1f s, %d frames, sketched to %d rows", len(stats.sample_lengths),
            stats.seconds, stats.frames, sketch_rows,
        )
    else:
        log.info("calibration: %d utterances, %.1f s, %d frames (exact)", len(stats.sample_lengths), stats.seconds, stats.frames)
    return stats


def peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024

