"""Audio loading: soundfile to read, mono mix, soxr to resample to 16 kHz, float32, validated."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from speechdistill import SAMPLE_RATE
from speechdistill.data.errors import BadAudioError

if TYPE_CHECKING:
    from speechdistill.data.manifest import Utterance

log = logging.getLogger(__name__)

# The HuBERT/WavLM CNN's receptive field: shorter input yields no frame at all.
MIN_SAMPLES = 400


def resample(wav: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    if orig_sr == target_sr:
        return wav
    return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str,
    target_sr: int = SAMPLE_RATE,
    expected_sr: int | None = None,
    min_samples: int = MIN_SAMPLES,
    mono: str = "mix",
    start: int = 0,
    frames: int = -1,
) -> np.ndarray:
    """Load ``path`` as float32 mono at ``target_sr``.

    ``start``/``frames``: read only that many samples from that sample on (at the file's rate); a
    region that runs past the end of the file is an error (a stale shard manifest).
    ``expected_sr``: the manifest's rate; a file at another rate means a stale manifest.
    ``mono``: ``mix`` averages channels, ``error`` refuses multi-channel files.
    Raises BadAudioError naming the file and the problem.
    """
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True, start=start, frames=frames)
    except FileNotFoundError:
        raise BadAudioError(path, "file does not exist") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        if not os.path.exists(path):
            raise BadAudioError(path, "file does not exist") from None
        raise BadAudioError(path, f"unreadable or corrupt audio ({e})") from None
    if expected_sr is not None and sr != expected_sr:
        raise BadAudioError(path, f"sample rate is {sr} Hz but the manifest says {expected_sr} Hz")
    if frames >= 0 and data.shape[0] < frames:
        raise BadAudioError(path, f"samples {start}..{start + frames} requested but the file ends at {start + data.shape[0]}")
    if data.shape[0] == 0:
        raise BadAudioError(path, "empty audio (zero samples)")
    if data.shape[1] > 1:
        if mono == "error":
            raise BadAudioError(path, f"{data.shape[1]} channels; expected mono")
        data = data.mean(axis=1, keepdims=True)
    wav = data[:, 0]
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise BadAudioError(path, f"{bad} NaN/Inf sample(s)")
    wav = resample(wav, sr, target_sr)
    if wav.shape[0] < min_samples:
        raise BadAudioError(
            path,
            f"too short: {wav.shape[0]} samples at {target_sr} Hz, the CNN front end needs at least "
            f"{min_samples} ({1000 * min_samples / target_sr:.0f} ms)",
        )
    return np.ascontiguousarray(wav, dtype=np.float32)


def load_utterance(utt: Utterance, start: int = 0, frames: int | None = None) -> np.ndarray:
    """A manifest utterance as float32 mono 16 kHz: the whole file, or its region of a pre-decoded shard.

    ``start``/``frames`` pick a part (16 kHz samples); for a 16 kHz shard only that part is read."""
    if utt.offset is not None and utt.sample_rate == SAMPLE_RATE:
        n = utt.num_samples - start if frames is None else frames
        return load_audio(utt.path, expected_sr=utt.sample_rate, start=utt.offset + start, frames=n)
    if utt.offset is not None:
        wav = load_audio(utt.path, expected_sr=utt.sample_rate, start=utt.offset, frames=utt.num_samples)
    else:
        wav = load_audio(utt.path, expected_sr=utt.sample_rate)
    if start or frames is not None:
        wav = wav[start : None if frames is None else start + frames]
    return wav


def audio_info(path: str) -> tuple[int, int, int]:
    """(num_frames, sample_rate, channels) without decoding the samples."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        if not os.path.exists(path):
            raise BadAudioError(path, "file does not exist") from None
        raise BadAudioError(path, f"unreadable or corrupt audio ({e})") from None
    return int(info.frames), int(info.samplerate), int(info.channels)


def write_audio(path: str, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    sf.write(path, wav, sr, subtype="PCM_16")
