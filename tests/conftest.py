"""Shared fixtures: small corpora made of tones (no TTS, no network, no shared data)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from speechdistill.data.audio import write_audio
from speechdistill.data.manifest import Utterance, write_manifest

torch.set_num_threads(1)

LETTER_HZ = {c: 300 + 90 * i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}


def tone_utterance(text: str, sr: int = 16000, seg: float = 0.12, seed: int = 0) -> np.ndarray:
    """One tone per character (silence for spaces): a learnable toy 'speech' signal."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seg * sr)) / sr
    parts = []
    for ch in text:
        if ch == " ":
            parts.append(np.zeros_like(t))
        else:
            f = LETTER_HZ.get(ch, 200)
            parts.append(0.5 * np.sin(2 * np.pi * f * t) * np.hanning(len(t)))
    wav = np.concatenate([np.zeros(800), *parts, np.zeros(800)]).astype(np.float32)
    return wav + 0.003 * rng.standard_normal(len(wav)).astype(np.float32)


def make_tone_corpus(root, texts, name="train", sr=16000) -> str:
    root.mkdir(parents=True, exist_ok=True)
    utts = []
    for i, text in enumerate(texts):
        wav = tone_utterance(text, sr=sr, seed=i)
        path = root / f"{name}_{i:03d}.wav"
        write_audio(str(path), wav, sr)
        utts.append(Utterance(f"{name}_{i:03d}", str(path), len(wav), sr, text, f"spk{i % 3}"))
    manifest = root / f"{name}.jsonl"
    write_manifest(manifest, utts)
    return str(manifest)


WORDS = ["AB", "CAB", "BAD", "DAB", "ACE", "BED", "FED", "DEAF", "FADE", "BEAD", "CAFE", "FACE"]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 4))) for _ in range(n)]


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    return {
        "train": make_tone_corpus(root, random_texts(24, 0), "train"),
        "dev": make_tone_corpus(root, random_texts(6, 1), "dev"),
        "root": root,
    }


def make_labelled_recordings(root, speakers=("george", "jackson", "nicolas", "theo"), digits=3, takes=12) -> str:
    """FSDD-shaped ``{digit}_{speaker}_{take}.wav`` tone recordings at 8 kHz (one tone per digit)."""
    rec = root / "recordings"
    rec.mkdir(parents=True, exist_ok=True)
    for spk in speakers:
        for digit in range(digits):
            for take in range(takes):
                wav = tone_utterance("ABC"[digit] * 2, sr=8000, seed=take + 7 * digit)
                write_audio(str(rec / f"{digit}_{spk}_{take}.wav"), wav, 8000)
    return str(rec)


def make_compare_corpus(root) -> str:
    """train/dev/test tone corpora with transcripts, speakers and a label (the number of words)."""
    from dataclasses import replace

    from speechdistill.data.manifest import read_manifest

    for name, n, seed in [("train", 24, 0), ("dev", 8, 1), ("test", 10, 2)]:
        m = make_tone_corpus(root, random_texts(n, seed), name)
        write_manifest(m, [replace(u, label=f"n{len(u.text.split())}") for u in read_manifest(m)])
    return str(root)
