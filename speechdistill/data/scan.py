"""Build manifests from corpora on disk: LibriSpeech layout, any folder of audio, fairseq tsv/wrd."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from speechdistill.data.audio import audio_info
from speechdistill.data.errors import BadAudioError, BadInputError, ManifestError
from speechdistill.data.manifest import Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)

AUDIO_EXTS = (".flac", ".wav", ".ogg", ".mp3", ".opus", ".sph", ".aiff", ".aif")


def _utterance(path: Path, uid: str, text: str | None, speaker: str | None, on_bad: str,
               skipped: list[tuple[str, str]]) -> Utterance | None:
    try:
        frames, sr, _ = audio_info(str(path))
    except BadAudioError as e:
        if on_bad == "error":
            raise
        skipped.append((str(path), e.problem))
        return None
    return Utterance(uid, str(path.resolve()), frames, sr, text, speaker)


def scan_librispeech(
    root: str | Path, subsets: Iterable[str], out_dir: str | Path, on_bad: str = "error"
) -> dict[str, tuple[Path, int, list[tuple[str, str]]]]:
    """LibriSpeech layout: ROOT/SUBSET/SPEAKER/CHAPTER/*.flac with SPEAKER-CHAPTER.trans.txt.
    Writes OUT_DIR/SUBSET.jsonl per subset."""
    root, out_dir = Path(root), Path(out_dir)
    results = {}
    for subset in subsets:
        sub = root / subset
        if not sub.is_dir():
            # Accept ROOT pointing at LibriSpeech/ or its parent.
            alt = root / "LibriSpeech" / subset
            if alt.is_dir():
                sub = alt
            else:
                raise BadInputError(f"{sub}: subset folder not found (expected ROOT/{subset}/SPEAKER/CHAPTER/)")
        utts: list[Utterance] = []
        skipped: list[tuple[str, str]] = []
        trans_files = sorted(sub.glob("*/*/*.trans.txt"))
        if not trans_files:
            raise BadInputError(f"{sub}: no SPEAKER/CHAPTER/*.trans.txt files; is this a LibriSpeech subset?")
        for trans in tqdm(trans_files, desc=f"scan {subset}", unit="chapter"):
            speaker = trans.parent.parent.name
            for line_no, line in enumerate(_read_text(trans).splitlines(), 1):
                if not line.strip():
                    continue
                uid, _, text = line.partition(" ")
                if not text:
                    raise ManifestError(str(trans), line_no, "expected 'UTTERANCE-ID TRANSCRIPT'")
                path = trans.parent / f"{uid}.flac"
                if not path.exists():
                    if on_bad == "error":
                        raise BadAudioError(str(path), f"file does not exist (listed in {trans.name})")
                    skipped.append((str(path), "file does not exist"))
                    continue
                u = _utterance(path, uid, text.strip(), speaker, on_bad, skipped)
                if u:
                    utts.append(u)
        out = out_dir / f"{subset}.jsonl"
        write_manifest(out, utts)
        results[subset] = (out, len(utts), skipped)
        log.info("%s: %d utterances, %.2f h -> %s", subset, len(utts), sum(u.duration for u in utts) / 3600, out)
    return results


def _read_text(path: str | Path) -> str:
    """A UTF-8 text input (transcripts, fairseq lists); a missing or undecodable file names itself."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(str(path), None, "file does not exist")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = data[: e.start].count(b"\n") + 1
        raise ManifestError(str(path), line_no, f"not UTF-8 text ({e.reason})") from None


def _read_transcript(audio: Path) -> str | None:
    for cand in (audio.with_suffix(".txt"), audio.with_suffix(".lab")):
        if cand.is_file():
            return " ".join(_read_text(cand).split())
    return None


def scan_folder(
    root: str | Path, out: str | Path, on_bad: str = "error", transcripts: str | Path | None = None
) -> tuple[int, list[tuple[str, str]]]:
    """Every audio file under ROOT. Transcripts from a sibling .txt/.lab, or a TSV/space-separated
    ``ID TEXT`` file (ID = file stem). The speaker is the first folder below ROOT, if any."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder")
    table: dict[str, str] = {}
    if transcripts:
        for line_no, line in enumerate(_read_text(transcripts).splitlines(), 1):
            if not line.strip():
                continue
            uid, sep, text = line.replace("\t", " ", 1).partition(" ")
            if not sep:
                raise ManifestError(str(transcripts), line_no, "expected 'ID TEXT'")
            table[uid] = text.strip()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())
    if not files:
        raise BadInputError(f"{root}: no audio files ({', '.join(AUDIO_EXTS)})")
    utts, skipped = [], []
    for path in tqdm(files, desc="scan", unit="file"):
        rel = path.relative_to(root)
        uid = str(rel.with_suffix("")).replace(os.sep, "/")
        speaker = rel.parts[0] if len(rel.parts) > 1 else None
        text = table.get(path.stem) if transcripts else _read_transcript(path)
        u = _utterance(path, uid, text, speaker, on_bad, skipped)
        if u:
            utts.append(u)
    write_manifest(out, utts)
    return len(utts), skipped


def import_fairseq(tsv: str | Path, out: str | Path, wrd: str | Path | None = None,
                   on_bad: str = "error") -> int:
    """fairseq wav2vec/HuBERT manifests: first line = root dir, then ``relpath<TAB>num_samples``.
    The sample rate is read from each file header (fairseq assumes 16 kHz)."""
    tsv = Path(tsv)
    lines = _read_text(tsv).splitlines()
    if not lines:
        raise ManifestError(str(tsv), None, "empty file; the first line must be the audio root folder")
    root = Path(lines[0].strip())
    texts: list[str] | None = None
    if wrd:
        texts = [ln.strip() for ln in _read_text(wrd).splitlines()]
    rows = [(i, ln) for i, ln in enumerate(lines[1:], start=2) if ln.strip()]
    if texts is not None and len(texts) != len(rows):
        raise ManifestError(str(wrd), None, f"{len(texts)} transcripts for {len(rows)} audio lines in {tsv}")
    utts = []
    skipped: list[tuple[str, str]] = []
    for k, (line_no, line) in enumerate(rows):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise ManifestError(str(tsv), line_no, "expected 'RELATIVE_PATH<TAB>NUM_SAMPLES'")
        path = root / parts[0]
        uid = str(Path(parts[0]).with_suffix("")).replace(os.sep, "/")
        try:
            _, sr, _ = audio_info(str(path))
        except BadAudioError as e:
            if on_bad == "error":
                raise
            skipped.append((str(path), e.problem))
            continue
        utts.append(Utterance(uid, str(path.resolve()), int(parts[1]), sr, texts[k] if texts else None))
    write_manifest(out, utts)
    if skipped:
        log.warning("skipped %d bad file(s)", len(skipped))
    return len(utts)


def export_fairseq(manifest: str | Path, tsv: str | Path, wrd: str | Path | None = None,
                   ltr: str | Path | None = None) -> int:
    """Write fairseq tsv (+ .wrd words, + .ltr letters with '|' word boundaries)."""
    utts = read_manifest(manifest)
    sharded = [u.id for u in utts if u.offset is not None]
    if sharded:
        raise ManifestError(str(manifest), None, f"{len(sharded)} utterance(s) (e.g. {sharded[0]}) are regions of "
                            "pre-decoded shards (an offset key), which fairseq manifests cannot express; export "
                            "the manifest that `data predecode` read instead")
    paths = [Path(u.path).resolve() for u in utts]
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")
    out = [str(root)] + [f"{p.relative_to(root)}\t{u.num_samples}" for p, u in zip(paths, utts)]
    Path(tsv).parent.mkdir(parents=True, exist_ok=True)
    Path(tsv).write_text("\n".join(out) + "\n", encoding="utf-8")
    if wrd or ltr:
        missing = [u.id for u in utts if u.text is None]
        if missing:
            raise ManifestError(str(manifest), None, f"{len(missing)} utterance(s) have no text (e.g. {missing[0]})")
    if wrd:
        Path(wrd).write_text("".join(f"{u.text}\n" for u in utts), encoding="utf-8")
    if ltr:
        Path(ltr).write_text(
            "".join(" ".join(list(u.text.replace(" ", "|"))) + " |\n" for u in utts), encoding="utf-8"
        )
    return len(utts)
