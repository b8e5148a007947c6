"""Character vocabulary for CTC: blank (id 0), unknown, word delimiter ``|``, then the characters seen.

Encoding and decoding are ours rather than a transformers tokenizer's: transformers v5 treats the
``|`` delimiter as a special token and can drop it when decoding (transformers v5 tokenizer change), which silently
glues words together and wrecks WER.  ``vocab.json`` keeps the HF layout (token -> id) so stock
tools can read it; ``vocab_meta.json`` records which tokens are special.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechdistill.asr.metrics import normalize_text
from speechdistill.errors import BadInputError
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

BLANK = "<pad>"
UNK = "<unk>"
WORD_DELIMITER = "|"
VOCAB_FILE = "vocab.json"
META_FILE = "vocab_meta.json"
FORMAT_VERSION = 1


class VocabError(BadInputError):
    """A vocabulary (file or token list) that cannot serve CTC."""


@dataclass
class CharVocab:
    """``tokens[i]`` is the symbol of id ``i``; id 0 is the CTC blank."""

    tokens: list[str]
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, list) or not all(isinstance(t, str) for t in self.tokens):
            raise VocabError(f"the vocabulary must be a list of strings, got {self.tokens!r:.80}")
        if not self.tokens or self.tokens[0] != BLANK:
            raise VocabError(f"the CTC blank {BLANK!r} must be id 0")
        for special in (UNK, WORD_DELIMITER):
            if special not in self.tokens:
                raise VocabError(f"vocabulary lacks {special!r}")
        dupes = [t for t, n in Counter(self.tokens).items() if n > 1]
        if dupes:
            raise VocabError(f"duplicate vocabulary entries: {dupes}")
        for t in self.tokens:
            if t in (BLANK, UNK, WORD_DELIMITER):
                continue
            if len(t) != 1 or t.isspace():
                raise VocabError(f"vocabulary entry {t!r} is not a single non-space character")
        self._index = {t: i for i, t in enumerate(self.tokens)}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, texts: Iterable[str | None], min_count: int = 1) -> CharVocab:
        """From training transcripts (normalised as for scoring); characters sorted for stability."""
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(normalize_text(t).replace(" ", ""))
        # normalize_text removes "|", "<" and ">", so no transcript character can alias a special token.
        chars = sorted(c for c, n in counts.items() if n >= min_count)
        if not chars:
            raise VocabError("no characters in the training transcripts (are the manifest 'text' fields empty?)")
        rare = sorted(c for c, n in counts.items() if n < min_count)
        if rare:
            log.info("%d rare character(s) map to %s: %s", len(rare), UNK, "".join(rare))
        return cls([BLANK, UNK, WORD_DELIMITER, *chars])

    # -- ids ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return self._index[UNK]

    @property
    def delimiter_id(self) -> int:
        return self._index[WORD_DELIMITER]

    def encode(self, text: str | None, normalize: bool = True) -> list[int]:
        """Text -> ids: spaces become ``|``, unseen characters ``<unk>``."""
        text = normalize_text(text) if normalize else (text or "")
        # Unnormalised text may hold a literal "|": it is a word boundary either way.
        return [self.delimiter_id if ch == " " else self._index.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids (already CTC-collapsed) -> text; blanks and ``<unk>`` vanish, ``|`` becomes a space."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.blank_id or i == self.unk_id:
                continue
            if i < 0 or i >= len(self.tokens):
                raise VocabError(f"id {i} outside the vocabulary (size {len(self.tokens)})")
            chars.append(" " if i == self.delimiter_id else self.tokens[i])
        return " ".join("".join(chars).split())

    # -- files ----------------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        atomic_write_json(out_dir / VOCAB_FILE, {t: i for i, t in enumerate(self.tokens)})
        atomic_write_json(
            out_dir / META_FILE,
            {
                "format_version": FORMAT_VERSION,
                "blank": BLANK,
                "unk": UNK,
                "word_delimiter": WORD_DELIMITER,
                "normalization": "NFKC, uppercase, punctuation removed except apostrophes, spaces collapsed",
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        """From a directory holding ``vocab.json`` or the file itself."""
        path = Path(path)
        file = path / VOCAB_FILE if path.is_dir() else path
        if not file.is_file():
            raise VocabError(f"{file}: vocabulary file does not exist")
        try:
            mapping = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise VocabError(f"{file}: unreadable vocabulary ({e})") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
            raise VocabError(f"{file}: expected a JSON object mapping token -> integer id")
        ids = sorted(mapping.values())
        if ids != list(range(len(ids))):
            raise VocabError(f"{file}: ids are not 0..{len(ids) - 1} without gaps")
        tokens = [""] * len(ids)
        for t, i in mapping.items():
            tokens[i] = t
        try:
            return cls(tokens)
        except VocabError as e:
            raise VocabError(f"{file}: {e}") from None

    def to_list(self) -> list[str]:
        return list(self.tokens)
