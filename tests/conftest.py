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


@pytest.fixture(scope="session")
def tone_units(tone_corpus, tmp_path_factory):
    """Unit labels of the tone corpus (tiny:hubert layer 2, k=8): train and dev, one k-means model."""
    from speechdistill.run.units import UnitsConfig, run_units

    root = tmp_path_factory.mktemp("units")
    common = {"teacher": "tiny:hubert", "layer": 2, "k": 8, "fit_n_init": 1, "progress": False, "device": "cpu"}
    run_units(UnitsConfig(manifest=tone_corpus["train"], out=str(root / "train"), **common))
    run_units(UnitsConfig(manifest=tone_corpus["dev"], out=str(root / "dev"), kmeans=str(root / "train"), **common))
    return {"train": str(root / "train"), "dev": str(root / "dev")}
