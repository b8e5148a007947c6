"""The native manifest: JSONL, one utterance a line.

Keys: ``id``, ``path`` (relative to the manifest's folder, or absolute), ``num_samples``,
``sample_rate``, and optional ``text``, ``speaker``, ``label`` (a class name for utterance-level
tasks such as keyword spotting: ``speechdistill compare``) and ``offset``: the utterance is then
``num_samples`` samples starting at sample ``offset`` of ``path``, a shard of many utterances written by
``speechdistill data predecode``.  Reading resolves paths to absolute ones;
writing makes them relative to the manifest's folder where possible so a corpus folder can move.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from speechdistill import SAMPLE_RATE
from speechdistill.data.errors import ManifestError
from speechdistill.utils.io import atomic_write_text

REQUIRED_KEYS = ("id", "path", "num_samples", "sample_rate")
OPTIONAL_KEYS = ("text", "speaker", "label", "offset")


@dataclass
class Utterance:
    id: str
    path: str
    num_samples: int
    sample_rate: int
    text: str | None = None
    speaker: str | None = None
    label: str | None = None
    offset: int | None = None  # first sample in ``path`` (a pre-decoded shard); None = the whole file

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


# Decoded length vs the manifest's num_samples: resampling and codec padding (MP3 encoder delay: tens of
# ms) move a little, a stale or hand-written manifest moves seconds (and batching, which trusts
# num_samples, then overruns its memory budget).
LENGTH_TOLERANCE = 0.01  # relative
LENGTH_TOLERANCE_SECONDS = 0.1  # absolute floor


def length_mismatch(u: Utterance, decoded_16k: int) -> str | None:
    """Why ``u``'s decoded length (samples at 16 kHz) disagrees with its manifest entry, or None."""
    expected = u.num_samples * SAMPLE_RATE / u.sample_rate
    if abs(decoded_16k - expected) <= max(LENGTH_TOLERANCE * expected, LENGTH_TOLERANCE_SECONDS * SAMPLE_RATE):
        return None
    return (
        f"the file holds {decoded_16k / SAMPLE_RATE:.2f} s of audio but the manifest says {u.duration:.2f} s "
        f"(num_samples={u.num_samples}); rebuild the manifest (speechdistill data folder/librispeech ...)"
    )


def parse_line(line: str, manifest: str, line_no: int, base_dir: Path) -> Utterance:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(manifest, line_no, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ManifestError(manifest, line_no, "line is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ManifestError(manifest, line_no, f"missing key(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ManifestError(manifest, line_no, f"unknown key(s) {', '.join(unknown)}")
    for k in ("num_samples", "sample_rate"):
        if isinstance(obj[k], bool) or not isinstance(obj[k], int) or obj[k] < 0:
            raise ManifestError(manifest, line_no, f"{k} must be a non-negative integer, got {obj[k]!r}")
    if obj["sample_rate"] == 0:
        raise ManifestError(manifest, line_no, "sample_rate must be positive")
    for k in ("id", "path"):
        if not isinstance(obj[k], str) or not obj[k]:
            raise ManifestError(manifest, line_no, f"{k} must be a non-empty string")
    for k in ("text", "speaker"):
        if obj.get(k) is not None and not isinstance(obj[k], str):
            raise ManifestError(manifest, line_no, f"{k} must be a string")
    offset = obj.get("offset")
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
        raise ManifestError(manifest, line_no, f"offset must be a non-negative integer, got {offset!r}")
    path = Path(obj["path"])
    if not path.is_absolute():
        path = base_dir / path
    return Utterance(
        id=obj["id"],
        path=str(path),
        num_samples=obj["num_samples"],
        sample_rate=obj["sample_rate"],
        text=obj.get("text"),
        speaker=obj.get("speaker"),
        label=obj.get("label"),
        offset=offset,
    )


def iter_manifest_lines(path: str | Path):
    """Yield (line_no, Utterance | ManifestError) so callers can choose to stop or to skip."""
    path = Path(path)
    if path.is_dir():
        raise ManifestError(str(path), None, "is a folder, not a manifest file (JSONL)")
    if not path.is_file():
        raise ManifestError(str(path), None, "manifest file does not exist")
    base = path.resolve().parent
    try:
        f = path.open("rb")  # decoded per line: a bad byte is reported with its line number
    except OSError as e:
        raise ManifestError(str(path), None, f"cannot be read ({e.strerror})") from None
    with f:
        yield from _parse_lines(f, path, base)


def _parse_lines(lines, path: Path, base: Path):
    seen: set[str] = set()
    for line_no, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")  # tolerate a BOM
        except UnicodeDecodeError as e:
            yield line_no, ManifestError(
                str(path), line_no, f"not UTF-8 text ({e.reason} at byte {e.start} of the line); manifests "
                "are UTF-8 JSONL"
            )
            continue
        if not line.strip():
            continue
        try:
            utt = parse_line(line, str(path), line_no, base)
            if utt.id in seen:
                raise ManifestError(str(path), line_no, f"duplicate id {utt.id!r}")
            seen.add(utt.id)
            yield line_no, utt
        except ManifestError as e:
            yield line_no, e


def read_manifest(path: str | Path, on_bad_line: str = "error") -> list[Utterance]:
    """Read a manifest. ``on_bad_line='skip'`` drops bad lines (callers log the count)."""
    out: list[Utterance] = []
    for _, item in iter_manifest_lines(path):
        if isinstance(item, ManifestError):
            if on_bad_line == "error":
                raise item
            continue
        out.append(item)
    return out


def utterance_to_dict(utt: Utterance, base_dir: Path | None) -> dict:
    d = asdict(utt)
    # In memory a relative path is relative to the working directory; on disk, to the manifest.
    p = Path(utt.path).resolve()
    d["path"] = str(p)
    if base_dir is not None:
        try:
            d["path"] = os.path.relpath(p, base_dir)
        except ValueError:  # another drive on Windows
            d["path"] = str(p)
    return {k: v for k, v in d.items() if v is not None or k in REQUIRED_KEYS}


def write_manifest(path: str | Path, utts: Iterable[Utterance], relative: bool = True) -> int:
    """Write atomically; returns the number of lines."""
    path = Path(path)
    base = path.resolve().parent if relative else None
    lines = [json.dumps(utterance_to_dict(u, base), ensure_ascii=False) for u in utts]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def merge_manifests(inputs: Sequence[str | Path], out: str | Path, repeats: Sequence[int] | None = None) -> int:
    """Concatenate manifests (e.g. LibriSpeech's three training subsets into ls960.jsonl); paths are
    rewritten relative to ``out``'s folder.  ``repeats[i]`` copies of input i (extra copies get ids
    ``ID#rK``) up-weight a small corpus.  Every input line must be valid; an id present in two inputs is an
    error naming both files."""
    from dataclasses import replace

    inputs = [str(p) for p in inputs]
    repeats = list(repeats) if repeats else [1] * len(inputs)
    if len(repeats) != len(inputs):
        raise ManifestError(str(out), None, f"{len(inputs)} manifests but {len(repeats)} repeat counts")
    if any(r < 1 for r in repeats):
        raise ManifestError(str(out), None, f"repeat counts must be >= 1, got {repeats}")
    utts: list[Utterance] = []
    first_seen: dict[str, str] = {}
    for path, n in zip(inputs, repeats):
        for utt in read_manifest(path):
            for k in range(n):
                uid = utt.id if k == 0 else f"{utt.id}#r{k}"
                if uid in first_seen:
                    raise ManifestError(path, None, f"id {uid!r} is also in {first_seen[uid]}")
                first_seen[uid] = path
                utts.append(replace(utt, id=uid))
    if not utts:
        raise ManifestError(str(out), None, "the input manifests hold no utterances")
    return write_manifest(out, utts)
