"""Prompt text for the synthetic corpus: grammar sentences from a word list, or connected digits.

Transcripts follow the LibriSpeech convention (upper case A-Z, apostrophe, single spaces). Each prompt
also carries the text given to the synthesiser: lower case (eSpeak reads some all-capital words as
abbreviations) with punctuation for phrasing and question intonation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from speechdistill.data.errors import BadInputError

TEXT_MODES = ("sentences", "digits")
TRANSCRIPT_RE = re.compile(r"[A-Z']+( [A-Z']+)*")
_TOKEN_RE = re.compile(r"[A-Z']+")

DIGIT_WORDS = ("ZERO", "OH", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")

LEXICON_SECTIONS = ("noun", "place", "adjective", "verb_t", "verb_i", "adverb", "name", "time")
# How many whitespace-separated forms each section's lines hold (None: a phrase of any length).
_SECTION_ARITY: dict[str, int | None] = {
    "noun": 2,
    "place": 1,
    "adjective": 1,
    "verb_t": 2,
    "verb_i": 2,
    "adverb": 1,
    "name": 1,
    "time": None,
}

# Closed-class words belong to the grammar, not the word list.
SUBJECT_PRONOUNS = ("I", "YOU", "HE", "SHE", "WE", "THEY")
OBJECT_PRONOUNS = ("ME", "YOU", "HIM", "HER", "US", "THEM")
CONTRACTED_BE = {"I": "I'M", "YOU": "YOU'RE", "HE": "HE'S", "SHE": "SHE'S", "WE": "WE'RE", "THEY": "THEY'RE"}
DET_SINGULAR = ("THE", "A", "THE", "A", "THIS", "THAT", "MY", "YOUR", "HIS", "HER", "OUR", "THEIR", "EVERY")
DET_PLURAL = (
    "THE",
    "SOME",
    "THESE",
    "THOSE",
    "MY",
    "YOUR",
    "OUR",
    "THEIR",
    "MANY",
    "A FEW",
    "SEVERAL",
    "TWO",
    "THREE",
    "FOUR",
    "FIVE",
    "SIX",
    "SEVEN",
    "EIGHT",
    "NINE",
    "TEN",
    "TWELVE",
    "TWENTY",
)
# Frequency adverbs go before the verb, unlike the word list's manner adverbs.
FREQUENCY = ("OFTEN", "SOMETIMES", "NEVER", "ALWAYS", "RARELY", "USUALLY", "ONCE", "ALMOST")
DEGREE = ("VERY", "QUITE", "RATHER", "TOO", "SO", "REALLY")
MODALS = (
    "WILL",
    "CAN",
    "COULD",
    "SHOULD",
    "MIGHT",
    "MUST",
    "WOULD",
    "WON'T",
    "CAN'T",
    "COULDN'T",
    "SHOULDN'T",
    "WOULDN'T",
)
QUESTION_MODALS = ("WILL", "CAN", "COULD", "SHOULD", "WOULD", "DID", "DID", "DIDN'T", "WON'T", "CAN'T")
WH_WORDS = ("WHERE", "WHEN", "WHY", "HOW")
PREPOSITIONS = (
    "IN",
    "NEAR",
    "BEHIND",
    "INSIDE",
    "OUTSIDE",
    "BESIDE",
    "ACROSS",
    "THROUGH",
    "AROUND",
    "BY",
    "AT",
    "TOWARDS",
    "FROM",
    "PAST",
)
CONJUNCTIONS = ("AND", "BUT", "SO", "BECAUSE", "WHILE", "WHEN", "AFTER", "BEFORE", "UNTIL")
REPORTING = ("SAID", "THOUGHT", "KNEW", "HOPED", "WROTE", "HEARD", "FORGOT", "DREAMED")
# Words where the letter rule for A/AN is wrong.
_AN_ALTHOUGH_CONSONANT = {"HOUR", "HONEST", "HONOUR", "HEIR"}
_A_ALTHOUGH_VOWEL = {"ONE", "ONCE", "UNIFORM", "UNIT", "UNIQUE", "USEFUL", "USUAL", "EUROPEAN", "USER"}


@dataclass(frozen=True)
class Prompt:
    transcript: str  # upper case, LibriSpeech style
    spoken: str  # what the synthesiser reads


class TextGenerator(Protocol):
    def generate(self, rng: random.Random) -> Prompt: ...


@dataclass(frozen=True)
class Lexicon:
    nouns: tuple[tuple[str, str], ...]  # (singular, plural)
    places: tuple[str, ...]
    adjectives: tuple[str, ...]
    verbs_t: tuple[tuple[str, str], ...]  # (base, past), take an object
    verbs_i: tuple[tuple[str, str], ...]  # (base, past), no object
    adverbs: tuple[str, ...]
    names: tuple[str, ...]
    times: tuple[str, ...]


def default_lexicon_path() -> Path:
    return Path(str(resources.files("speechdistill.data.synth").joinpath("lexicon.txt")))


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Parse the sectioned word list; errors name the file and line."""
    path = Path(path) if path is not None else default_lexicon_path()
    if not path.is_file():
        raise BadInputError(f"{path}: word list does not exist")
    sections: dict[str, list[tuple[str, ...]]] = {name: [] for name in LEXICON_SECTIONS}
    current: str | None = None
    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1].strip()
                if current not in sections:
                    raise BadInputError(
                        f"{path}:{line_no}: unknown section [{current}]; expected one of "
                        f"{', '.join(LEXICON_SECTIONS)}"
                    )
                continue
            if current is None:
                raise BadInputError(f"{path}:{line_no}: entry before the first [section] header")
            forms = tuple(line.split())
            if not all(_TOKEN_RE.fullmatch(w) for w in forms):
                raise BadInputError(
                    f"{path}:{line_no}: only upper-case A-Z and apostrophes allowed: {line!r}"
                )
            arity = _SECTION_ARITY[current]
            if arity is not None and len(forms) != arity:
                raise BadInputError(
                    f"{path}:{line_no}: [{current}] entries need {arity} word(s), got {line!r}"
                )
            sections[current].append(forms)
    empty = [name for name, items in sections.items() if not items]
    if empty:
        raise BadInputError(f"{path}: empty or missing section(s): {', '.join(empty)}")

    def pairs(name: str) -> tuple[tuple[str, str], ...]:
        return tuple((f[0], f[1]) for f in sections[name])

    def words(name: str) -> tuple[str, ...]:
        return tuple(" ".join(f) for f in sections[name])

    return Lexicon(
        nouns=pairs("noun"),
        places=words("place"),
        adjectives=words("adjective"),
        verbs_t=pairs("verb_t"),
        verbs_i=pairs("verb_i"),
        adverbs=words("adverb"),
        names=words("name"),
        times=words("time"),
    )


def _article(word: str) -> str:
    if word in _AN_ALTHOUGH_CONSONANT:
        return "AN"
    if word in _A_ALTHOUGH_VOWEL:
        return "A"
    return "AN" if word[0] in "AEIOU" else "A"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


class SentenceGenerator:
    """A small probabilistic grammar over the word list: statements, questions, commands, compounds.

    Sentences have ``min_words``..``max_words`` words (rejection sampling). Past tense and modals keep
    subject-verb agreement trivial; present tense appears only with the verb BE, agreed explicitly.
    """

    def __init__(self, lexicon: Lexicon | None = None, min_words: int = 4, max_words: int = 14):
        if not 1 <= min_words <= max_words:
            raise BadInputError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
        self.lex = lexicon if lexicon is not None else load_lexicon()
        self.min_words = min_words
        self.max_words = max_words
        # (weight, template); a template returns (words, punctuation) where spoken-only commas are
        # marked by a trailing "," on a word.
        self._templates: list[tuple[float, Callable[[random.Random], tuple[str, str]]]] = [
            (3.0, self._statement_transitive),
            (2.0, self._statement_intransitive),
            (1.5, self._modal),
            (1.0, self._negative),
            (1.5, self._copula),
            (1.0, self._existential),
            (1.0, self._yes_no_question),
            (1.0, self._wh_question),
            (0.7, self._imperative),
            (1.5, self._compound),
            (0.7, self._reported),
            (0.7, self._relative),
        ]
        self._weights = [w for w, _ in self._templates]

    # -- noun phrases --------------------------------------------------------------------------
    def _np(self, rng: random.Random, allow_pronoun: bool = False, subject: bool = True) -> tuple[str, bool]:
        """A noun phrase and whether it is plural."""
        r = rng.random()
        if allow_pronoun and r < 0.2:
            pronouns = SUBJECT_PRONOUNS if subject else OBJECT_PRONOUNS
            p = rng.choice(pronouns)
            return p, p in ("WE", "THEY", "YOU", "US", "THEM")
        if r < 0.32:
            return rng.choice(self.lex.names), False
        singular, plural = rng.choice(self.lex.nouns)
        is_plural = rng.random() < 0.3
        adj = rng.choice(self.lex.adjectives) if rng.random() < 0.4 else ""
        noun = plural if is_plural else singular
        if rng.random() < 0.08:  # possessive: THE BAKER'S DOG, ANNA'S DOG
            owner = (
                rng.choice(self.lex.names) if rng.random() < 0.5 else f"THE {rng.choice(self.lex.nouns)[0]}"
            )
            return _join(f"{owner}'S", adj, noun), is_plural
        det = rng.choice(DET_PLURAL if is_plural else DET_SINGULAR)
        if det == "A":
            det = _article(adj or noun)
        return _join(det, adj, noun), is_plural

    def _pp(self, rng: random.Random) -> str:
        return _join(rng.choice(PREPOSITIONS), "THE", rng.choice(self.lex.places))

    def _maybe(self, rng: random.Random, p: float, make: Callable[[random.Random], str]) -> str:
        return make(rng) if rng.random() < p else ""

    def _time(self, rng: random.Random) -> str:
        return rng.choice(self.lex.times)

    def _adverb(self, rng: random.Random) -> str:
        return rng.choice(self.lex.adverbs)

    # -- clause templates ----------------------------------------------------------------------
    def _clause_past(self, rng: random.Random) -> str:
        subj, _ = self._np(rng, allow_pronoun=True)
        if rng.random() < 0.6:
            _, past = rng.choice(self.lex.verbs_t)
            obj, _ = self._np(rng, allow_pronoun=True, subject=False)
            return _join(subj, past, obj)
        _, past = rng.choice(self.lex.verbs_i)
        return _join(subj, past, self._maybe(rng, 0.4, self._adverb))

    def _statement_transitive(self, rng: random.Random) -> tuple[str, str]:
        subj, _ = self._np(rng, allow_pronoun=True)
        freq = rng.choice(FREQUENCY) if rng.random() < 0.1 else ""
        _, past = rng.choice(self.lex.verbs_t)
        obj, _ = self._np(rng, allow_pronoun=True, subject=False)
        return _join(
            subj, freq, past, obj, self._maybe(rng, 0.35, self._pp), self._maybe(rng, 0.3, self._time)
        ), "."

    def _statement_intransitive(self, rng: random.Random) -> tuple[str, str]:
        subj, _ = self._np(rng, allow_pronoun=True)
        freq = rng.choice(FREQUENCY) if rng.random() < 0.15 else ""
        _, past = rng.choice(self.lex.verbs_i)
        return _join(
            subj,
            freq,
            past,
            self._maybe(rng, 0.5, self._adverb),
            self._maybe(rng, 0.4, self._pp),
            self._maybe(rng, 0.3, self._time),
        ), "."

    def _modal(self, rng: random.Random) -> tuple[str, str]:
        subj, _ = self._np(rng, allow_pronoun=True)
        modal = rng.choice(MODALS)
        if rng.random() < 0.6:
            base, _ = rng.choice(self.lex.verbs_t)
            obj, _ = self._np(rng, allow_pronoun=True, subject=False)
            return _join(subj, modal, base, obj, self._maybe(rng, 0.3, self._time)), "."
        base, _ = rng.choice(self.lex.verbs_i)
        return _join(
            subj, modal, base, self._maybe(rng, 0.5, self._adverb), self._maybe(rng, 0.3, self._pp)
        ), "."

    def _negative(self, rng: random.Random) -> tuple[str, str]:
        subj, _ = self._np(rng, allow_pronoun=True)
        aux = rng.choice(("DIDN'T", "DID NOT", "NEVER"))
        base, past = rng.choice(self.lex.verbs_t)
        verb = past if aux == "NEVER" else base
        obj, _ = self._np(rng, allow_pronoun=True, subject=False)
        return _join(subj, aux, verb, obj, self._maybe(rng, 0.4, self._time)), "."

    def _copula(self, rng: random.Random) -> tuple[str, str]:
        degree = rng.choice(DEGREE) if rng.random() < 0.4 else ""
        adj = rng.choice(self.lex.adjectives)
        if rng.random() < 0.25:
            pronoun = rng.choice(SUBJECT_PRONOUNS)
            if rng.random() < 0.5:
                head = CONTRACTED_BE[pronoun]
            else:
                head = _join(pronoun, "WERE" if pronoun in ("YOU", "WE", "THEY") else "WAS")
            return _join(head, degree, adj, self._maybe(rng, 0.3, self._time)), "."
        subj, plural = self._np(rng)
        verb = rng.choice(
            ("WERE", "ARE", "WEREN'T", "AREN'T") if plural else ("WAS", "IS", "WASN'T", "ISN'T")
        )
        return _join(subj, verb, degree, adj, self._maybe(rng, 0.3, self._pp)), "."

    def _existential(self, rng: random.Random) -> tuple[str, str]:
        singular, plural = rng.choice(self.lex.nouns)
        adj = rng.choice(self.lex.adjectives) if rng.random() < 0.5 else ""
        if rng.random() < 0.5:
            verb = rng.choice(("WAS", "IS", "WASN'T"))
            head = (
                _join(_article(adj or singular), adj, singular)
                if verb != "WASN'T"
                else _join("ANY", adj, singular)
            )
        else:
            verb = rng.choice(("WERE", "ARE", "WEREN'T"))
            det = rng.choice(("SOME", "MANY", "TWO", "THREE", "FIVE", "NO")) if verb != "WEREN'T" else "ANY"
            head = _join(det, adj, plural)
        return _join("THERE", verb, head, self._pp(rng), self._maybe(rng, 0.3, self._time)), "."

    def _yes_no_question(self, rng: random.Random) -> tuple[str, str]:
        aux = rng.choice(QUESTION_MODALS)
        subj, _ = self._np(rng, allow_pronoun=True)
        base, _ = rng.choice(self.lex.verbs_t)
        obj, _ = self._np(rng, allow_pronoun=True, subject=False)
        return _join(aux, subj, base, obj, self._maybe(rng, 0.3, self._pp)), "?"

    def _wh_question(self, rng: random.Random) -> tuple[str, str]:
        r = rng.random()
        if r < 0.25:  # WHO TOOK THE BASKET?
            _, past = rng.choice(self.lex.verbs_t)
            obj, _ = self._np(rng, subject=False)
            return _join("WHO", past, obj, self._maybe(rng, 0.4, self._time)), "?"
        subj, _ = self._np(rng, allow_pronoun=True)
        if r < 0.45:  # WHAT DID YOUR SISTER BRING?
            base, _ = rng.choice(self.lex.verbs_t)
            return _join(
                "WHAT",
                rng.choice(("DID", "WILL", "CAN", "SHOULD")),
                subj,
                base,
                self._maybe(rng, 0.4, self._time),
            ), "?"
        base, _ = rng.choice(self.lex.verbs_t)
        obj, _ = self._np(rng, allow_pronoun=True, subject=False)
        return _join(
            rng.choice(WH_WORDS), rng.choice(("DID", "WILL", "COULD", "DIDN'T")), subj, base, obj
        ), "?"

    def _imperative(self, rng: random.Random) -> tuple[str, str]:
        head = rng.choice(("PLEASE", "DON'T", "LET'S", "", "NEVER", "ALWAYS"))
        base, _ = rng.choice(self.lex.verbs_t)
        obj, _ = self._np(rng, allow_pronoun=True, subject=False)
        return _join(head, base, obj, self._maybe(rng, 0.5, self._pp), self._maybe(rng, 0.3, self._time)), "."

    def _compound(self, rng: random.Random) -> tuple[str, str]:
        conj = rng.choice(CONJUNCTIONS)
        # Spoken text gets a comma before the conjunction so the synthesiser phrases it.
        return _join(self._clause_past(rng) + ",", conj, self._clause_past(rng)), "."

    def _reported(self, rng: random.Random) -> tuple[str, str]:
        subj, _ = self._np(rng, allow_pronoun=True)
        that = "THAT" if rng.random() < 0.5 else ""
        return _join(subj, rng.choice(REPORTING), that, self._clause_past(rng)), "."

    def _relative(self, rng: random.Random) -> tuple[str, str]:
        singular, plural = rng.choice(self.lex.nouns)
        is_plural = rng.random() < 0.3
        _, past = rng.choice(self.lex.verbs_t)
        subj, _ = self._np(rng, allow_pronoun=True)
        verb = "WERE" if is_plural else "WAS"
        return _join(
            "THE",
            plural if is_plural else singular,
            rng.choice(("THAT", "WHICH", "")),
            subj,
            past,
            verb,
            rng.choice(DEGREE) if rng.random() < 0.3 else "",
            rng.choice(self.lex.adjectives),
        ), "."

    def generate(self, rng: random.Random) -> Prompt:
        for _ in range(1000):
            template = rng.choices(self._templates, weights=self._weights)[0][1]
            text, punct = template(rng)
            words = text.split()
            if self.min_words <= len(words) <= self.max_words:
                transcript = " ".join(w.rstrip(",") for w in words)
                spoken = " ".join(words).lower() + punct
                return Prompt(transcript=transcript, spoken=spoken)
        raise RuntimeError(  # only reachable with a pathological min/max_words
            f"could not generate a sentence of {self.min_words}-{self.max_words} words in 1000 tries"
        )


class DigitGenerator:
    """TIDIGITS-like connected digit strings: 1..max_digits digits, 0 spoken as ZERO or OH."""

    def __init__(self, min_digits: int = 1, max_digits: int = 7):
        if not 1 <= min_digits <= max_digits:
            raise BadInputError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        self.min_digits = min_digits
        self.max_digits = max_digits

    def generate(self, rng: random.Random) -> Prompt:
        n = rng.randint(self.min_digits, self.max_digits)
        words = []
        for _ in range(n):
            d = rng.randrange(10)
            words.append(DIGIT_WORDS[d + 1] if d else rng.choice(("ZERO", "OH")))
        transcript = " ".join(words)
        return Prompt(transcript=transcript, spoken=transcript.lower())


def make_text_generator(mode: str) -> TextGenerator:
    if mode == "sentences":
        return SentenceGenerator()
    if mode == "digits":
        return DigitGenerator()
    raise BadInputError(f"unknown text mode {mode!r}; choose one of {', '.join(TEXT_MODES)}")


def is_valid_transcript(text: str) -> bool:
    return TRANSCRIPT_RE.fullmatch(text) is not None
