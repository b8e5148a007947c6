"""Manifests for utterance-level tasks from a folder of labelled recordings (and merging manifests).

The label, speaker and take of each file come from its path relative to the root, matched against a
pattern with ``{label}``, ``{speaker}``, ``{take}`` and ``{_}`` (anything, ignored) fields, e.g. the
Free Spoken Digit Dataset's ``{label}_{speaker}_{take}.wav`` or Speech Commands'
``{label}/{speaker}_nohash_{take}.wav``.  Two evaluation splits are written, because they answer
different questions:

- ``speakers/``: speaker-disjoint (test and dev speakers never appear in train): does a keyword
  classifier generalise to new voices?
- ``takes/``: the same speakers everywhere, held-out takes (FSDD's official split: takes 0-4 are test):
  the split speaker identification needs, and the one FSDD results are usually quoted on.

and ``upstream/``: the utterances in no test or dev part of either split (train speakers, train
takes), safe for training an upstream model that is then evaluated on both splits.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from speechdistill.data.audio import audio_info
from speechdistill.data.errors import BadAudioError, BadInputError
from speechdistill.data.manifest import Utterance, write_manifest
from speechdistill.data.scan import AUDIO_EXTS
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

FIELDS = ("label", "speaker", "take", "_")
#: ``--text-map digits``: FSDD's labels are digits and the spoken word is the digit's English name.
TEXT_PRESETS = {
    "digits": {str(i): w for i, w in enumerate(
        ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"])},
}
INFO_FILE = "labelled_info.json"


@dataclass
class LabelledFolderConfig:
    root: str
    out: str
    pattern: str = "{label}_{speaker}_{take}.wav"
    # Speaker split: named speakers, else the first ``num_*_speakers`` in sorted order.
    test_speakers: list[str] = field(default_factory=list)
    dev_speakers: list[str] = field(default_factory=list)
    num_test_speakers: int = 1
    num_dev_speakers: int = 1
    # Take split (FSDD's official test set is takes 0-4).
    test_takes: list[str] = field(default_factory=lambda: [str(i) for i in range(5)])
    dev_takes: list[str] = field(default_factory=lambda: [str(i) for i in range(5, 10)])
    # label -> transcript (``text`` field, for CTC); empty = no text.
    text_map: dict[str, str] = field(default_factory=dict)
    on_bad_audio: str = "error"


def pattern_regex(pattern: str) -> re.Pattern:
    """``{label}_{speaker}_{take}.wav`` -> a regex with named groups (fields match no ``/``)."""
    parts, pos, seen = [], 0, set()
    for m in re.finditer(r"\{([^{}]*)\}", pattern):
        name = m.group(1)
        if name not in FIELDS:
            raise BadInputError(f"pattern {pattern!r}: unknown field {{{name}}}; use {', '.join('{' + f + '}' for f in FIELDS)}")
        if name != "_" and name in seen:
            raise BadInputError(f"pattern {pattern!r}: field {{{name}}} appears twice")
        seen.add(name)
        parts.append(re.escape(pattern[pos:m.start()]))
        parts.append(r"[^/]+?" if name == "_" else rf"(?P<{name}>[^/]+?)")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    missing = {"label", "speaker"} - seen
    if missing:
        raise BadInputError(f"pattern {pattern!r} must contain {' and '.join('{' + f + '}' for f in sorted(missing))}")
    return re.compile("^" + "".join(parts) + "$")


def parse_text_map(spec: str) -> dict[str, str]:
    """``digits`` (a preset) or ``0=ZERO,1=ONE,...``."""
    if not spec:
        return {}
    if spec in TEXT_PRESETS:
        return dict(TEXT_PRESETS[spec])
    out = {}
    for item in spec.split(","):
        if "=" not in item:
            raise BadInputError(
                f"--text-map {spec!r}: expected a preset ({', '.join(TEXT_PRESETS)}) or LABEL=TEXT,... pairs"
            )
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def scan_labelled(cfg: LabelledFolderConfig) -> list[tuple[Utterance, str | None]]:
    """(utterance with label and speaker, take) for every audio file under root matching the pattern."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder")
    rx = pattern_regex(cfg.pattern)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTS)
    out, unmatched = [], []
    for path in tqdm(files, desc="scan", unit="file", leave=False):
        rel = path.relative_to(root).as_posix()
        m = rx.match(rel)
        if m is None:
            unmatched.append(rel)
            continue
        try:
            frames, sr, _ = audio_info(str(path))
        except BadAudioError as e:
            if cfg.on_bad_audio == "error":
                raise
            log.warning("skipping %s: %s", e.path, e.problem)
            continue
        label, speaker = m.group("label"), m.group("speaker")
        take = m.groupdict().get("take")
        text = cfg.text_map.get(label) if cfg.text_map else None
        if cfg.text_map and text is None:
            raise BadInputError(f"{rel}: label {label!r} has no entry in the text map")
        uid = rel.rsplit(".", 1)[0].replace("/", "-")
        out.append((Utterance(uid, str(path.resolve()), frames, sr, text, speaker, label), take))
    if unmatched:
        log.warning("%d file(s) do not match %r and are left out, e.g. %s", len(unmatched), cfg.pattern, unmatched[:3])
    if not out:
        raise BadInputError(f"{root}: no audio file matches the pattern {cfg.pattern!r}")
    return out


def _pick_speakers(speakers: Sequence[str], named: Sequence[str], n: int, what: str, taken: set[str]) -> list[str]:
    if named:
        unknown = sorted(set(named) - set(speakers))
        if unknown:
            raise BadInputError(f"{what} speaker(s) {unknown} not found; speakers: {', '.join(speakers)}")
        return list(named)
    free = [s for s in speakers if s not in taken]
    return free[:n]


def write_labelled_manifests(cfg: LabelledFolderConfig) -> dict:
    """Scan, split and write ``speakers/``, ``takes/``, ``upstream/`` manifests plus ``labelled_info.json``."""
    items = scan_labelled(cfg)
    speakers = sorted({u.speaker for u, _ in items})
    test_spk = _pick_speakers(speakers, cfg.test_speakers, cfg.num_test_speakers, "test", set())
    dev_spk = _pick_speakers(speakers, cfg.dev_speakers, cfg.num_dev_speakers, "dev", set(test_spk))
    if set(test_spk) & set(dev_spk):
        raise BadInputError(f"speakers {sorted(set(test_spk) & set(dev_spk))} are both test and dev speakers")
    if len(speakers) - len(test_spk) - len(dev_spk) < 1:
        raise BadInputError(f"{len(speakers)} speaker(s): none left for train after test {test_spk} and dev {dev_spk}")
    has_takes = all(t is not None for _, t in items)
    test_takes, dev_takes = set(cfg.test_takes), set(cfg.dev_takes)

    def speaker_split(u: Utterance) -> str:
        return "test" if u.speaker in test_spk else "dev" if u.speaker in dev_spk else "train"

    def take_split(take: str | None) -> str:
        return "test" if take in test_takes else "dev" if take in dev_takes else "train"

    splits: dict[str, dict[str, list[Utterance]]] = {
        k: {s: [] for s in ("train", "dev", "test")} for k in ("speakers", "takes", "upstream")
    }
    for u, take in items:
        splits["speakers"][speaker_split(u)].append(u)
        if has_takes:
            splits["takes"][take_split(take)].append(u)
            if speaker_split(u) == "train" and take_split(take) != "test":
                splits["upstream"][take_split(take)].append(u)
    out = Path(cfg.out)
    written: dict[str, dict[str, str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for scheme, parts in splits.items():
        if scheme != "speakers" and not has_takes:
            continue
        for split, utts in parts.items():
            if scheme == "upstream" and split == "test":
                continue
            if not utts:
                raise BadInputError(f"the {scheme} split has no {split} utterances; check the speaker/take options")
            path = out / scheme / f"{split}.jsonl"
            write_manifest(path, utts)
            written.setdefault(scheme, {})[split] = str(path)
            counts.setdefault(scheme, {})[split] = len(utts)
    if not has_takes:
        log.warning("the pattern has no {take}: only the speaker split is written")
    unseen = sorted({u.label for u in splits["speakers"]["test"]} - {u.label for u in splits["speakers"]["train"]})
    if unseen:
        log.warning("test label(s) %s never occur in the speaker split's train part", unseen)
    info = {
        "root": str(Path(cfg.root).resolve()), "pattern": cfg.pattern, "speakers": speakers,
        "test_speakers": test_spk, "dev_speakers": dev_spk,
        "test_takes": sorted(test_takes) if has_takes else None, "dev_takes": sorted(dev_takes) if has_takes else None,
        "labels": dict(sorted(Counter(u.label for u, _ in items).items())), "text_map": cfg.text_map,
        "manifests": written, "num_utterances": counts,
        "splits": {
            "speakers": "speaker-disjoint: test/dev speakers never in train (keyword spotting on new voices)",
            "takes": "held-out takes of the same speakers (speaker identification; FSDD's official split)",
            "upstream": "train speakers x train/dev takes: in no test part of either split (upstream training)",
        },
    }
    atomic_write_json(out / INFO_FILE, info)
    return info
