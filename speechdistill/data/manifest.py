"""The native manifest: JSONL, one utterance a line.

Keys: ``id``, ``path`` (relative to the manifest's folder, or absolute), ``num_samples``,
``sample_rate``, and optional ``text``, ``speaker`` and ``offset``: the utterance is then
``num_samples`` samples starting at sample ``offset`` of ``path``, a shard of many utterances written by
``speechdistill data predecode``.  Reading resolves paths to absolute ones;
writing makes them relative to the manifest's folder where possible so a corpus folder can move.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from speechdistill.data.errors import ManifestError
from speechdistill.utils.io import atomic_write_text

REQUIRED_KEYS = ("id", "path", "num_samples", "sample_rate")
OPTIONAL_KEYS = ("text", "speaker", "offset")


@dataclass
class Utterance:
    id: str
    path: str
    num_samples: int
    sample_rate: int
    text: str | None = None
    speaker: str | None = None
    offset: int | None = None  # first sample in ``path`` (a pre-decoded shard); None = the whole file

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


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
        offset=offset,
    )


def iter_manifest_lines(path: str | Path):
    """Yield (line_no, Utterance | ManifestError) so callers can choose to stop or to skip."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(str(path), None, "manifest file does not exist")
    base = path.resolve().parent
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
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
