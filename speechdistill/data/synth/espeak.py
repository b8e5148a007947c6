"""A ctypes driver for the eSpeak NG library shipped in the ``espeakng-loader`` wheel.

No system package and no ``espeak`` binary: the wheel carries ``libespeak-ng`` and its data folder.
The library keeps synthesis state in C globals (the glottal-source phase and flutter position, for
instance), so the same call made twice in one process gives audio that differs in length and
samples, and ``espeak_Terminate``/``espeak_Initialize`` do not reset it. For audio that depends only
on the request (not on what the process synthesised before, hence not on how utterances were spread
over worker processes) every utterance runs on a freshly loaded copy of the library: ``dlclose``
then ``dlopen``, about 3 ms. The library is not thread-safe: use one :class:`EspeakSynth` per process.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechdistill.data.errors import BadInputError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'speechdistill[tts]'"

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # finish the final phrase with its pause, so echo tails are not cut off
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_EE_NOT_FOUND = 2

# English voices in espeak-ng's data (lang/gmw/en*); en-Shaw is left out: it is for Shavian script.
ENGLISH_VOICES = (
    "en",
    "en-us",
    "en-gb-x-rp",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)
# Voice variants (voices/!v) that sound like a human speaker, by the variant's pitch and gender.
# Robotic, echo-heavy, whispered and monotone variants are left out on purpose.
MALE_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "Andy",
    "Denis",
    "Diogo",
    "Gene",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Mario",
    "Michael",
    "Mike",
    "adam",
    "antonio",
    "benjamin",
    "david",
    "edward",
    "grandpa",
    "gustave",
    "ian",
    "iven3",
    "john",
    "kaukovalta",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "marcelo",
    "max",
    "michel",
    "miguel",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "sandro",
    "travis",
    "victor",
    "Alex",
    "boris",
)
FEMALE_VARIANTS = (
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "Alicia",
    "Andrea",
    "Annie",
    "anika",
    "aunty",
    "belinda",
    "grandma",
    "linda",
    "shelby",
    "steph",
    "steph2",
    "steph3",
)


class EspeakUnavailableError(BadInputError):
    """The eSpeak NG library or its data is missing."""


@dataclass(frozen=True)
class EspeakPaths:
    library: str
    data: str


def find_espeak() -> EspeakPaths:
    """Locate the library and data folder of the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakUnavailableError(
            f"speech synthesis needs the espeakng-loader package, which is not installed: run {INSTALL_HINT}"
        ) from None
    library = espeakng_loader.get_library_path()
    try:
        data = espeakng_loader.get_data_path()
    except RuntimeError as e:
        raise EspeakUnavailableError(
            f"espeakng-loader is broken ({e}); reinstall it: {INSTALL_HINT}"
        ) from None
    if not os.path.isfile(library):
        raise EspeakUnavailableError(f"{library}: eSpeak NG library missing; reinstall it: {INSTALL_HINT}")
    if not os.path.isfile(os.path.join(data, "phontab")):
        raise EspeakUnavailableError(f"{data}: eSpeak NG data folder incomplete; reinstall: {INSTALL_HINT}")
    return EspeakPaths(library=library, data=data)


def available_variants(paths: EspeakPaths, names: tuple[str, ...]) -> tuple[str, ...]:
    """The subset of ``names`` present in this data folder (espeak silently ignores a missing one)."""
    folder = Path(paths.data) / "voices" / "!v"
    return tuple(n for n in names if (folder / n).is_file())


def available_voices(paths: EspeakPaths, names: tuple[str, ...] = ENGLISH_VOICES) -> tuple[str, ...]:
    present = {p.name.lower() for p in (Path(paths.data) / "lang").rglob("*") if p.is_file()}
    return tuple(n for n in names if n.lower() in present)


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _dlclose(handle: int) -> bool:
    try:
        import _ctypes
    except ImportError:  # pragma: no cover
        return False
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is None:  # pragma: no cover
        return False
    close(handle)
    return True


class EspeakSynth:
    """Synthesise one utterance at a time to int16 samples at :attr:`sample_rate` (22050 Hz).

    ``fresh_state=True`` reloads the library for every utterance so the output is a pure function
    of the arguments; ``False`` is faster by ~3 ms an utterance but history-dependent.
    """

    def __init__(self, paths: EspeakPaths | None = None, fresh_state: bool = True):
        self.paths = paths or find_espeak()
        self.fresh_state = fresh_state
        self._chunks: list[np.ndarray] = []
        # Keep the ctypes callback object alive as long as the library may call it.
        self._callback = _SynthCallback(self._on_audio)
        try:
            self._libc: ctypes.CDLL | None = ctypes.CDLL(None)  # the C runtime, for srand()
        except (OSError, TypeError):  # Windows has no "current process" handle here
            self._libc = None
        self._lib: ctypes.CDLL | None = None
        self.sample_rate = 0
        self._can_unload = True
        self._load()
        self.version = self._version()

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue

    def _load(self) -> None:
        try:
            lib = ctypes.CDLL(self.paths.library)
        except OSError as e:
            raise EspeakUnavailableError(f"{self.paths.library}: cannot load ({e}); {INSTALL_HINT}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        sr = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.paths.data.encode(), _INITIALIZE_DONT_EXIT
        )
        if sr <= 0:
            raise EspeakUnavailableError(
                f"espeak_Initialize failed with data folder {self.paths.data}; reinstall: {INSTALL_HINT}"
            )
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self.sample_rate = sr

    def _unload(self) -> None:
        if self._lib is None:
            return
        self._lib.espeak_Terminate()
        handle = self._lib._handle
        self._lib = None
        if not _dlclose(handle) and self._can_unload:
            self._can_unload = False
            log.warning("cannot unload libespeak-ng here: synthesised audio will depend on utterance order")

    def _version(self) -> str:
        assert self._lib is not None
        out = self._lib.espeak_Info(None)
        return out.decode("utf-8", "replace") if out else "unknown"

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        variant: str | None = None,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        seed: int = 1,
    ) -> np.ndarray:
        """int16 samples for ``text``. ``rate`` in words/minute (80-450); ``pitch``, ``pitch_range``
        0-100 relative to the voice; ``seed`` drives the breath/noise generators."""
        if self.fresh_state and self._lib is not None and self._can_unload:
            self._unload()
        if self._lib is None:
            self._load()
        lib = self._lib
        assert lib is not None
        name = f"{voice}+{variant}" if variant else voice
        err = lib.espeak_SetVoiceByName(name.encode())
        if err != 0:
            what = "not found" if err == _EE_NOT_FOUND else f"error {err}"
            raise ValueError(f"eSpeak voice {name!r}: {what} in {self.paths.data}")
        for param, value in (
            (_PARAM_RATE, rate),
            (_PARAM_PITCH, pitch),
            (_PARAM_RANGE, pitch_range),
            (_PARAM_VOLUME, volume),
        ):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise ValueError(f"eSpeak rejected parameter {param}={value}")
        # Noise generators: espeak's own and, in some builds, libc rand().
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed(int(seed))
        if self._libc is not None:
            self._libc.srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
        err = lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"espeak_Synchronize failed with error {err}")
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def close(self) -> None:
        self._unload()

    def __enter__(self) -> EspeakSynth:  # noqa: PYI034 (no typing.Self on Python 3.10)
        return self

    def __exit__(self, *exc) -> None:
        self.close()
