"""Write a multi-speaker synthetic English corpus: 16 kHz WAVs plus speaker-disjoint manifests.

Layout of ``out_dir``::

    wav/<speaker>/<utterance>.wav   16-bit mono, 16 kHz
    train.jsonl dev.jsonl test.jsonl  manifests (speechdistill.data.manifest), speaker-disjoint
    speakers.json                   generation settings and one record per speaker

Determinism: utterance ``k`` (its speaker, text, prosody, noise) is a function of ``(seed, k)`` only,
and every utterance is synthesised on a freshly loaded eSpeak (see ``espeak.py``), so the corpus is
byte-identical for a seed whatever the number of worker processes. The corpus is the shortest prefix
of utterances ``0, 1, 2, ...`` that reaches the requested duration with every split non-empty.

A fixed-size test set (``test_utterances``, ``test_speakers``): the test split then holds exactly that
many utterances from that many speakers, planned right after the first train and dev utterances, and
``hours`` counts train + dev only.  Comparisons need it: one word must not be a point of WER, so a
test set of 400+ utterances from 8+ unseen voices, whatever the size of the training part.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechdistill import SAMPLE_RATE
from speechdistill.data.audio import MIN_SAMPLES, resample, write_audio
from speechdistill.data.errors import BadInputError
from speechdistill.data.synth.espeak import (
    ENGLISH_VOICES,
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    EspeakPaths,
    EspeakSynth,
    EspeakUnavailableError,
    available_variants,
    available_voices,
    find_espeak,
)
from speechdistill.data.synth.text import TEXT_MODES, TextGenerator, make_text_generator

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
SPEAKERS_FILE = "speakers.json"
WAV_DIR = "wav"


@dataclass(frozen=True)
class AudioOptions:
    """Post-processing of the synthesiser output. Ranges are drawn per utterance."""

    sample_rate: int = SAMPLE_RATE
    trim_silence: bool = True
    # Silence kept/added before and after the speech, seconds.
    pad_seconds: tuple[float, float] = (0.05, 0.35)
    # Peak level after normalisation (eSpeak's own level varies by voice and some variants clip).
    peak: tuple[float, float] = (0.3, 0.9)
    # RMS of an added white noise floor in dBFS, so silences are not digital zero.
    noise_floor_dbfs: tuple[float, float] = (-80.0, -55.0)


@dataclass(frozen=True)
class ProsodyOptions:
    """Speaker base values and per-utterance jitter, in eSpeak units (rate: words/min, pitch 0-100)."""

    pitch: tuple[int, int] = (30, 70)
    pitch_range: tuple[int, int] = (25, 80)
    rate: tuple[int, int] = (130, 195)
    pitch_jitter: int = 6
    range_jitter: int = 10
    rate_jitter: float = 0.12  # relative


@dataclass(frozen=True)
class Speaker:
    """A fixed voice/variant/base-prosody combination. The id encodes all of it, so it is stable."""

    id: str
    split: str
    gender: str
    voice: str
    variant: str | None
    pitch: int
    pitch_range: int
    rate: int


@dataclass(frozen=True)
class UtteranceJob:
    index: int
    utt_id: str
    rel_path: str  # relative to out_dir
    split: str
    speaker: Speaker
    transcript: str
    spoken: str
    rate: int
    pitch: int
    pitch_range: int
    seed: int


@dataclass
class SynthConfig:
    hours: float
    seed: int = 0
    text: str = "sentences"
    num_workers: int | None = None  # None: all CPUs
    num_speakers: int | None = None  # None: from hours (see default_num_speakers)
    dev_fraction: float = 0.1  # of speakers
    test_fraction: float = 0.1
    # A fixed-size test split (see the module doc); None = test_fraction of speakers and utterances.
    test_utterances: int | None = None
    test_speakers: int | None = None
    overwrite: bool = False
    audio: AudioOptions = field(default_factory=AudioOptions)
    prosody: ProsodyOptions = field(default_factory=ProsodyOptions)

    def validate(self) -> None:
        if not (self.hours > 0 and np.isfinite(self.hours)):
            raise BadInputError(f"hours must be a positive number, got {self.hours}")
        if not 0 <= self.seed < 2**32:
            raise BadInputError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.text not in TEXT_MODES:
            raise BadInputError(f"unknown text mode {self.text!r}; choose one of {', '.join(TEXT_MODES)}")
        if self.num_workers is not None and self.num_workers < 1:
            raise BadInputError(f"num_workers must be at least 1, got {self.num_workers}")
        if self.num_speakers is not None and self.num_speakers < 3:
            raise BadInputError(
                f"num_speakers must be at least 3 (train, dev, test), got {self.num_speakers}"
            )
        for name in ("dev_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise BadInputError(f"{name} must be between 0 and 1 (exclusive), got {v}")
        if self.test_utterances is not None and self.test_utterances < 1:
            raise BadInputError(f"test_utterances must be at least 1, got {self.test_utterances}")
        if self.test_speakers is not None and self.test_speakers < 1:
            raise BadInputError(f"test_speakers must be at least 1, got {self.test_speakers}")
        if self.test_speakers is not None and self.num_speakers is not None and self.test_speakers > self.num_speakers - 2:
            raise BadInputError(
                f"test_speakers={self.test_speakers} leaves fewer than 2 of num_speakers={self.num_speakers} "
                "for train and dev"
            )
        if self.dev_fraction + self.test_fraction >= 0.9:
            raise BadInputError(
                f"dev_fraction + test_fraction = {self.dev_fraction + self.test_fraction} leaves too few "
                "training speakers; keep it below 0.9"
            )


def default_num_speakers(hours: float) -> int:
    """About 50 speakers an hour (72 s each), at least 10 and at most 500."""
    return int(min(500, max(10, round(50 * hours))))


def default_num_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _rng(seed: int, *keys: object) -> random.Random:
    # String seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random(":".join(["speechdistill-synth", str(seed), *map(str, keys)]))


def split_sizes(
    num_speakers: int, dev_fraction: float, test_fraction: float, test_speakers: int | None = None
) -> dict[str, int]:
    n_test = test_speakers or max(1, round(test_fraction * num_speakers))
    n_dev = max(1, round(dev_fraction * num_speakers))
    n_train = num_speakers - n_dev - n_test
    if n_train < 1:
        raise BadInputError(f"{num_speakers} speakers leave none for train; use more speakers")
    return {"train": n_train, "dev": n_dev, "test": n_test}


def make_speakers(
    num_speakers: int,
    seed: int,
    voices: tuple[str, ...],
    male_variants: tuple[str, ...],
    female_variants: tuple[str, ...],
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    prosody: ProsodyOptions = ProsodyOptions(),
    test_speakers: int | None = None,
) -> list[Speaker]:
    """Distinct speakers, half male half female, assigned to disjoint splits."""
    if not voices or not (male_variants or female_variants):
        raise EspeakUnavailableError("no English voices or voice variants found in the eSpeak NG data")
    rng = _rng(seed, "speakers")
    # The plain voice (no variant) is a male voice too.
    male_pool: tuple[str | None, ...] = (None, *male_variants)
    female_pool: tuple[str | None, ...] = tuple(female_variants) or male_pool
    drawn: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(drawn) < num_speakers:
        gender = "female" if len(drawn) % 2 else "male"
        variant = rng.choice(female_pool if gender == "female" else male_pool)
        voice = rng.choice(voices)
        pitch = rng.randint(*prosody.pitch)
        pitch_range = rng.randint(*prosody.pitch_range)
        rate = rng.randint(*prosody.rate)
        spk_id = f"{voice}_{variant or 'base'}_p{pitch}_g{pitch_range}_r{rate}"
        if spk_id in seen:
            continue
        seen.add(spk_id)
        drawn.append(
            {
                "id": spk_id,
                "gender": gender,
                "voice": voice,
                "variant": variant,
                "pitch": pitch,
                "pitch_range": pitch_range,
                "rate": rate,
            }
        )
    order = list(range(num_speakers))
    rng.shuffle(order)
    sizes = split_sizes(num_speakers, dev_fraction, test_fraction, test_speakers)
    splits = ["test"] * sizes["test"] + ["dev"] * sizes["dev"] + ["train"] * sizes["train"]
    return [Speaker(split=splits[pos], **drawn[i]) for pos, i in enumerate(order)]


class JobPlanner:
    """Yields utterance jobs 0, 1, 2, ... Each depends only on (seed, index) and the speaker list.

    Splits follow the speaker fractions in utterance counts (so in duration, roughly); the first three
    utterances go to train, dev, test so that even a tiny corpus has all three.  With ``test_quota``
    the test split gets exactly that many utterances, planned right after the first train and dev
    ones, and the rest is shared between train and dev by their speaker fractions.
    """

    def __init__(
        self, speakers: list[Speaker], seed: int, text: TextGenerator, prosody: ProsodyOptions,
        test_quota: int | None = None,
    ):
        self.seed = seed
        self.text = text
        self.prosody = prosody
        self.test_quota = test_quota
        self.by_split = {s: [spk for spk in speakers if spk.split == s] for s in SPLITS}
        shared = [s for s in SPLITS if not (test_quota and s == "test")]
        total = sum(len(self.by_split[s]) for s in shared)
        self.fractions = {s: (len(self.by_split[s]) / total if s in shared else 0.0) for s in SPLITS}
        self.counts = dict.fromkeys(SPLITS, 0)
        self.index = 0

    def _next_split(self) -> str:
        k = self.index
        if self.test_quota:
            if k < 2:
                return SPLITS[k]
            if self.counts["test"] < self.test_quota:
                return "test"
            k -= self.test_quota
        elif k < len(SPLITS):
            return SPLITS[k]
        # The split furthest behind its share (ties: train, dev, test).
        return max(SPLITS, key=lambda s: (self.fractions[s] * (k + 1) - self.counts[s], -SPLITS.index(s)))

    def next(self) -> UtteranceJob:
        k = self.index
        split = self._next_split()
        pool = self.by_split[split]
        spk = pool[self.counts[split] % len(pool)]
        self.counts[split] += 1
        self.index += 1
        rng = _rng(self.seed, "utterance", k)
        prompt = self.text.generate(rng)
        p = self.prosody
        rate = round(spk.rate * rng.uniform(1 - p.rate_jitter, 1 + p.rate_jitter))
        pitch = min(100, max(0, spk.pitch + rng.randint(-p.pitch_jitter, p.pitch_jitter)))
        pitch_range = min(100, max(0, spk.pitch_range + rng.randint(-p.range_jitter, p.range_jitter)))
        utt_id = f"{spk.id}-{k:07d}"
        return UtteranceJob(
            index=k,
            utt_id=utt_id,
            rel_path=f"{WAV_DIR}/{spk.id}/{utt_id}.wav",
            split=split,
            speaker=spk,
            transcript=prompt.transcript,
            spoken=prompt.spoken,
            rate=max(80, min(450, rate)),
            pitch=pitch,
            pitch_range=pitch_range,
            seed=rng.randrange(1, 2**31 - 1),
        )


def postprocess(raw: np.ndarray, in_sr: int, seed: int, opts: AudioOptions) -> np.ndarray:
    """int16 synthesiser output -> float32 at opts.sample_rate: trim, resample, level, pad, noise."""
    x = raw.astype(np.float32) / 32768.0
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak <= 0:
        raise RuntimeError("the synthesiser produced silence")
    if opts.trim_silence:
        # eSpeak's pauses are near digital silence: -46 dB below the peak keeps weak fricatives.
        loud = np.flatnonzero(np.abs(x) > 0.005 * peak)
        x = x[loud[0] : loud[-1] + 1]
    x = resample(x, in_sr, opts.sample_rate)
    rng = np.random.default_rng(seed)
    x = x * (rng.uniform(*opts.peak) / max(float(np.abs(x).max()), 1e-6))
    pad = [int(rng.uniform(*opts.pad_seconds) * opts.sample_rate) for _ in range(2)]
    x = np.concatenate([np.zeros(pad[0], np.float32), x, np.zeros(pad[1], np.float32)])
    if x.shape[0] < MIN_SAMPLES:
        x = np.pad(x, (0, MIN_SAMPLES - x.shape[0]))
    noise_rms = 10 ** (rng.uniform(*opts.noise_floor_dbfs) / 20)
    x = x + rng.standard_normal(x.shape[0]) * noise_rms
    return np.clip(x, -1.0, 32767 / 32768).astype(np.float32)


class UtteranceWriter:
    """Synthesise and write jobs; one per process (the eSpeak library is process-global)."""

    def __init__(
        self, paths: EspeakPaths, out_dir: str, audio: AudioOptions, engine: EspeakSynth | None = None
    ):
        self.engine = engine or EspeakSynth(paths)
        self.out_dir = Path(out_dir)
        self.audio = audio

    def __call__(self, job: UtteranceJob) -> tuple[int, int]:
        spk = job.speaker
        raw = self.engine.synthesize(
            job.spoken,
            voice=spk.voice,
            variant=spk.variant,
            rate=job.rate,
            pitch=job.pitch,
            pitch_range=job.pitch_range,
            seed=job.seed,
        )
        try:
            wav = postprocess(raw, self.engine.sample_rate, job.seed, self.audio)
        except RuntimeError as e:
            raise RuntimeError(f"utterance {job.utt_id} ({job.spoken!r}): {e}") from None
        path = self.out_dir / job.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_audio(str(path), wav, self.audio.sample_rate)
        return job.index, int(wav.shape[0])


_WORKER: UtteranceWriter | None = None


def _init_worker(paths: EspeakPaths, out_dir: str, audio: AudioOptions) -> None:
    global _WORKER
    _WORKER = UtteranceWriter(paths, out_dir, audio)


def _run_job(job: UtteranceJob) -> tuple[int, int]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(job)


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    from speechdistill.utils.io import ensure_dir

    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} exists and is not a folder; choose another path")
    existing = [out / name for name in (*(f"{s}.jsonl" for s in SPLITS), SPEAKERS_FILE, WAV_DIR)]
    existing = [p for p in existing if p.exists()]
    if existing and not overwrite:
        raise BadInputError(
            f"{out}: already holds a corpus ({', '.join(p.name for p in existing)}); choose another folder "
            "or pass overwrite=True (--overwrite) to replace it"
        )
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    ensure_dir(out, "--out folder")


def synthesize_corpus(
    out_dir: str | Path,
    hours: float,
    seed: int = 0,
    text: str = "sentences",
    num_workers: int | None = None,
    num_speakers: int | None = None,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    overwrite: bool = False,
    progress: bool = False,
    test_utterances: int | None = None,
    test_speakers: int | None = None,
    audio: AudioOptions | None = None,
    prosody: ProsodyOptions | None = None,
) -> dict[str, Any]:
    """Synthesise about ``hours`` of speech into ``out_dir``; see the module docstring for the layout.

    Returns ``{"out_dir", "manifests": {split: path}, "speakers_file", "num_utterances": {split: n},
    "num_speakers": {split: n}, "hours": {split: h}, "total_hours", "total_utterances", "seed", "text",
    "num_workers", "wall_seconds", "espeak_version"}``.
    Raises BadInputError for bad arguments or an occupied ``out_dir``, EspeakUnavailableError when
    the espeakng-loader package (``pip install 'speechdistill[tts]'``) is missing.
    """
    cfg = SynthConfig(
        hours=hours,
        seed=seed,
        text=text,
        num_workers=num_workers,
        num_speakers=num_speakers,
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        test_utterances=test_utterances,
        test_speakers=test_speakers,
        overwrite=overwrite,
        audio=audio or AudioOptions(),
        prosody=prosody or ProsodyOptions(),
    )
    return run_synthesis(out_dir, cfg, progress=progress)


def run_synthesis(out_dir: str | Path, cfg: SynthConfig, progress: bool = False) -> dict[str, Any]:
    # Imported here so spawned workers, which only need UtteranceWriter, do not import torch.
    from speechdistill.data.manifest import Utterance, write_manifest
    from speechdistill.utils.io import atomic_write_json

    cfg.validate()
    started = time.perf_counter()
    paths = find_espeak()
    voices = available_voices(paths, ENGLISH_VOICES)
    num_speakers = cfg.num_speakers or default_num_speakers(cfg.hours) + (cfg.test_speakers or 0)
    speakers = make_speakers(
        num_speakers,
        cfg.seed,
        voices,
        available_variants(paths, MALE_VARIANTS),
        available_variants(paths, FEMALE_VARIANTS),
        cfg.dev_fraction,
        cfg.test_fraction,
        cfg.prosody,
        cfg.test_speakers,
    )
    planner = JobPlanner(speakers, cfg.seed, make_text_generator(cfg.text), cfg.prosody, cfg.test_utterances)
    # Loading eSpeak here checks the installation before any output is touched or worker started.
    engine = EspeakSynth(paths)
    espeak_version = engine.version
    out = Path(out_dir)
    try:
        _prepare_out_dir(out, cfg.overwrite)
    except BaseException:
        engine.close()
        raise
    workers = cfg.num_workers or default_num_workers()
    target_s = cfg.hours * 3600.0
    sr = cfg.audio.sample_rate
    log.info(
        "synthesising %.3f h with %d speakers (%s) into %s using %d worker(s)",
        cfg.hours,
        len(speakers),
        cfg.text,
        out,
        workers,
    )

    accepted: list[tuple[UtteranceJob, int]] = []
    per_split = dict.fromkeys(SPLITS, 0)
    total_s = 0.0
    timed_s = 0.0  # the seconds ``hours`` counts: all, or train + dev with a fixed-size test split

    def done() -> bool:
        if cfg.test_utterances:
            return timed_s >= target_s and all(per_split.values()) and per_split["test"] >= cfg.test_utterances
        return total_s >= target_s and all(per_split.values())

    from tqdm import tqdm

    bar = tqdm(total=int(np.ceil(target_s)), unit="s", desc="synth", disable=not progress, dynamic_ncols=True)

    def accept(job: UtteranceJob, num_samples: int) -> None:
        nonlocal total_s, timed_s
        before = timed_s
        total_s += num_samples / sr
        if not (cfg.test_utterances and job.split == "test"):
            timed_s += num_samples / sr
        accepted.append((job, num_samples))
        per_split[job.split] += 1
        bar.update(min(int(timed_s), bar.total) - min(int(before), bar.total))

    try:
        if workers == 1:
            writer = UtteranceWriter(paths, str(out), cfg.audio, engine=engine)
            while not done():
                job = planner.next()
                accept(job, writer(job)[1])
        else:
            engine.close()  # the parent does not synthesise; free the library before spawning
            # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy mid-state.
            ctx = mp.get_context("spawn")
            window = 4 * workers
            with ctx.Pool(workers, initializer=_init_worker, initargs=(paths, str(out), cfg.audio)) as pool:
                inflight: deque = deque()
                surplus: list[UtteranceJob] = []
                while True:
                    while not done() and len(inflight) < window:
                        job = planner.next()
                        inflight.append((job, pool.apply_async(_run_job, (job,))))
                    if not inflight:
                        break
                    job, result = inflight.popleft()
                    _, num_samples = result.get()
                    if done():  # synthesised ahead of need: beyond the deterministic cut-off
                        surplus.append(job)
                    else:
                        accept(job, num_samples)
            for job in surplus:
                (out / job.rel_path).unlink(missing_ok=True)
                try:
                    (out / job.rel_path).parent.rmdir()  # only if it became empty
                except OSError:
                    pass
    finally:
        bar.close()
        engine.close()

    # Manifests, in generation order.
    manifests: dict[str, str] = {}
    for split in SPLITS:
        utts = [
            Utterance(
                id=job.utt_id,
                path=str((out / job.rel_path).resolve()),
                num_samples=n,
                sample_rate=sr,
                text=job.transcript,
                speaker=job.speaker.id,
            )
            for job, n in accepted
            if job.split == split
        ]
        manifests[split] = str(out / f"{split}.jsonl")
        write_manifest(manifests[split], utts)

    stats: dict[str, dict[str, float]] = {}
    for job, n in accepted:
        s = stats.setdefault(job.speaker.id, {"num_utterances": 0, "seconds": 0.0})
        s["num_utterances"] += 1
        s["seconds"] += n / sr
    used = [spk for spk in speakers if spk.id in stats]
    used.sort(key=lambda spk: (SPLITS.index(spk.split), spk.id))
    speakers_doc = {
        "generator": "speechdistill data synth",
        "seed": cfg.seed,
        "text": cfg.text,
        "hours_requested": cfg.hours,
        "test_utterances_requested": cfg.test_utterances,
        "sample_rate": sr,
        "espeak_version": espeak_version,
        "speakers": [
            {
                **asdict(spk),
                "num_utterances": int(stats[spk.id]["num_utterances"]),
                "seconds": round(stats[spk.id]["seconds"], 3),
            }
            for spk in used
        ],
    }
    atomic_write_json(out / SPEAKERS_FILE, speakers_doc)

    hours_by_split = {s: 0.0 for s in SPLITS}
    for job, n in accepted:
        hours_by_split[job.split] += n / sr / 3600
    summary = {
        "out_dir": str(out),
        "manifests": manifests,
        "speakers_file": str(out / SPEAKERS_FILE),
        "num_utterances": dict(per_split),
        "num_speakers": {s: sum(1 for spk in used if spk.split == s) for s in SPLITS},
        "hours": {s: round(h, 4) for s, h in hours_by_split.items()},
        "total_hours": round(total_s / 3600, 4),
        "total_utterances": len(accepted),
        "seed": cfg.seed,
        "text": cfg.text,
        "num_workers": workers,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "espeak_version": espeak_version,
    }
    log.info(
        "wrote %d utterances, %.3f h: %s",
        len(accepted),
        total_s / 3600,
        json.dumps(summary["num_utterances"]),
    )
    return summary
