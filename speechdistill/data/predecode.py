"""``speechdistill data predecode``: decode a corpus once into 16 kHz WAV shards.

Training reads every utterance once per epoch; decoding FLAC (and resampling) each time costs CPU
that a fast GPU step does not leave (measured in ``bench/loader_throughput.py``).  The shards hold many
utterances each, back to back, as 16 kHz mono PCM16 (or float) WAV; the new manifest's lines are the
old ones plus ``offset`` (first sample in the shard) with ``num_samples`` at 16 kHz.  WAV is
uncompressed and seekable, so a loader reads just a crop's samples (``soundfile`` start/frames).

Why not lhotse Shar or webdataset: both are tar streams built for sequential reads from object
storage; this project's sampler needs random access (duration buckets, exact resume at any batch), the
same manifest format everywhere (``data check``, evaluation, calibration all read these lines), and
no new dependency.  PCM16 is lossless for 16-bit sources (LibriSpeech FLAC); other sources are rounded
to 16 bits (``--subtype FLOAT`` keeps float32 at twice the size).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from speechdistill import SAMPLE_RATE
from speechdistill.data.audio import load_utterance
from speechdistill.data.errors import BadAudioError, BadInputError, ManifestError
from speechdistill.data.manifest import Utterance, iter_manifest_lines, write_manifest

log = logging.getLogger(__name__)

SUBTYPES = ("PCM_16", "FLOAT")
# A RIFF WAV's sizes are 32-bit: stay well below 4 GiB per shard.
MAX_SHARD_SECONDS = 10 * 3600


@dataclass
class PredecodeResult:
    manifest: Path
    utterances: int = 0
    seconds: float = 0.0
    shards: list[Path] = field(default_factory=list)
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clipped_samples: int = 0


def _decode(u: Utterance) -> tuple[Utterance, np.ndarray | None, str | None]:
    try:
        return u, load_utterance(u), None
    except BadAudioError as e:
        return u, None, e.problem


class _ShardWriter:
    """Appends utterances to numbered shards; each shard is written to a temporary name and renamed."""

    def __init__(self, out_dir: Path, shard_samples: int, subtype: str):
        self.dir = out_dir / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_samples, self.subtype = shard_samples, subtype
        self.index = 0
        self.file: sf.SoundFile | None = None
        self.path: Path | None = None
        self.pos = 0
        self.done: list[Path] = []

    def add(self, wav: np.ndarray) -> tuple[Path, int]:
        if self.file is not None and self.pos + len(wav) > self.shard_samples:
            self.close()
        if self.file is None:
            self.path = self.dir / f"shard_{self.index:05d}.wav"
            self.file = sf.SoundFile(str(self.path) + ".tmp", "w", SAMPLE_RATE, 1, self.subtype, format="WAV")
            self.index += 1
            self.pos = 0
        start = self.pos
        self.file.write(wav)
        self.pos += len(wav)
        return self.path, start

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            os.replace(str(self.path) + ".tmp", self.path)
            self.done.append(self.path)
            self.file = None


def predecode(
    manifest: str | Path, out_dir: str | Path, shard_seconds: float = 3600.0, subtype: str = "PCM_16",
    on_bad_audio: str = "error", workers: int = 0, progress: bool = True,
) -> PredecodeResult:
    """Write ``out_dir/shards/shard_NNNNN.wav`` and ``out_dir/<manifest name>`` (same lines, same order,
    plus ``offset``).  The manifest is written last, so a crash leaves no manifest pointing at half a
    shard."""
    if subtype not in SUBTYPES:
        raise BadInputError(f"--subtype must be one of {', '.join(SUBTYPES)}, got {subtype!r}")
    if not 0 < shard_seconds <= MAX_SHARD_SECONDS:
        raise BadInputError(f"--shard-seconds must be in (0, {MAX_SHARD_SECONDS}] (WAV files stay under 4 GiB)")
    out_dir = Path(out_dir)
    result = PredecodeResult(out_dir / Path(manifest).name)
    utts: list[Utterance] = []
    for line_no, item in iter_manifest_lines(manifest):
        if isinstance(item, ManifestError):
            if on_bad_audio == "error":
                raise item
            result.skipped.append((f"{manifest}:{line_no}", item.problem))
        else:
            utts.append(item)
    if result.manifest.resolve() == Path(manifest).resolve():
        raise BadInputError(f"--out {out_dir} would overwrite the input manifest {manifest}")
    writer = _ShardWriter(out_dir, int(shard_seconds * SAMPLE_RATE), subtype)
    out: list[Utterance] = []
    pool = ProcessPoolExecutor(workers) if workers > 0 else None
    try:
        decoded = pool.map(_decode, utts, chunksize=8) if pool else map(_decode, utts)
        for u, wav, problem in tqdm(decoded, total=len(utts), desc="predecode", unit="utt", disable=not progress):
            if wav is None:
                if on_bad_audio == "error":
                    raise BadAudioError(u.path, problem)
                log.warning("skipping %s: %s", u.path, problem)
                result.skipped.append((u.path, problem))
                continue
            if subtype == "PCM_16":
                # libsndfile does not clip float -> int16; resampled audio can overshoot full scale.
                over = np.abs(wav) > 1.0
                if over.any():
                    result.clipped_samples += int(over.sum())
                    wav = np.clip(wav, -1.0, 1.0)
            path, offset = writer.add(wav)
            out.append(Utterance(u.id, str(path), len(wav), SAMPLE_RATE, u.text, u.speaker, label=u.label, offset=offset))
            result.seconds += len(wav) / SAMPLE_RATE
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        writer.close()
    if not out:
        raise ManifestError(str(manifest), None, "no usable utterances to pre-decode")
    write_manifest(result.manifest, out)
    result.utterances = len(out)
    result.shards = writer.done
    result.bytes = sum(p.stat().st_size for p in writer.done)
    if result.clipped_samples:
        log.warning("clipped %d sample(s) beyond full scale to [-1, 1]", result.clipped_samples)
    return result
