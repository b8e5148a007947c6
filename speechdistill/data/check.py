"""``speechdistill data check``: validate every manifest line and every file it names."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from speechdistill import SAMPLE_RATE
from speechdistill.data.audio import audio_info, load_utterance
from speechdistill.data.errors import BadAudioError, ManifestError
from speechdistill.data.manifest import iter_manifest_lines, length_mismatch


@dataclass
class CheckReport:
    manifest: str
    utterances: int = 0
    seconds: float = 0.0
    sample_rates: Counter = field(default_factory=Counter)
    min_seconds: float = float("inf")
    max_seconds: float = 0.0
    with_text: int = 0
    speakers: set = field(default_factory=set)
    bad: list[tuple[str, str]] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def to_dict(self) -> dict:
        return {
            "manifest": self.manifest, "utterances": self.utterances, "hours": round(self.hours, 4),
            "sample_rates": dict(self.sample_rates),
            "min_seconds": round(self.min_seconds, 3) if self.utterances else None,
            "max_seconds": round(self.max_seconds, 3), "with_text": self.with_text,
            "speakers": len(self.speakers), "bad": [{"where": w, "problem": p} for w, p in self.bad],
        }


def check_manifest(manifest: str, decode: bool = True, progress: bool = True) -> CheckReport:
    """Every line parsed; with ``decode`` every file fully read (catches corrupt data and NaN), else its
    header read.  Either way the file's length must match the manifest's ``num_samples``."""
    rep = CheckReport(manifest)
    items = list(iter_manifest_lines(manifest))
    for line_no, item in tqdm(items, desc="check", unit="utt", disable=not progress):
        if isinstance(item, ManifestError):
            rep.bad.append((f"{manifest}:{line_no}", item.problem))
            continue
        try:
            if item.num_samples == 0:
                raise BadAudioError(item.path, "num_samples is 0")
            if decode:
                samples_16k = len(load_utterance(item))
            else:
                frames, sr, _ = audio_info(item.path)
                if sr != item.sample_rate:
                    raise BadAudioError(item.path, f"sample rate is {sr} Hz but the manifest says {item.sample_rate} Hz")
                if item.offset is not None:  # a region of a pre-decoded shard
                    if item.offset + item.num_samples > frames:
                        raise BadAudioError(item.path, f"offset {item.offset} + num_samples {item.num_samples} is past "
                                            f"the shard's end ({frames} samples)")
                    frames = item.num_samples
                samples_16k = round(frames * SAMPLE_RATE / sr)
            problem = length_mismatch(item, samples_16k)
            if problem:
                raise BadAudioError(item.path, problem)
            secs = samples_16k / SAMPLE_RATE
        except BadAudioError as e:
            rep.bad.append((e.path, e.problem))
            continue
        rep.utterances += 1
        rep.seconds += secs
        rep.sample_rates[item.sample_rate] += 1
        rep.min_seconds = min(rep.min_seconds, secs)
        rep.max_seconds = max(rep.max_seconds, secs)
        rep.with_text += item.text is not None
        if item.speaker:
            rep.speakers.add(item.speaker)
    return rep
