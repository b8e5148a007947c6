"""Shared fixtures: small corpora made of tones (no TTS, no network, no shared data)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

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


# ------------------------------------------------------------------------------------------------
# The CLI as users run it, and small models on disk (shared by the reliability tests)

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout: float = 300, umask: int | None = 0o022, fsize_limit: int | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m speechdistill ARGS`` in a new process (stdout and stderr captured, text)."""

    def limits():
        if umask is not None:
            os.umask(umask)
        if fsize_limit is not None:  # writes past it fail with EFBIG: a full disk, as the program sees it
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("SPEECHDISTILL_LOG", None)
    return subprocess.run([sys.executable, "-m", "speechdistill", *map(str, args)], check=False, capture_output=True,
                          text=True,
                          timeout=timeout, env=full_env, cwd=REPO, preexec_fn=limits)


def tiny_distill_args(corpus, out, *extra) -> list[str]:
    """``distill`` arguments for a seconds-long run on the tone corpus with a tiny random teacher."""
    return ["distill", "tiny_cpu", f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}",
            "teacher=tiny:hubert", "train.progress=false", "data.crop_seconds=0.6", "gendistiller.targets=[1,2,3,4]",
            "gendistiller.decoder_heads=4", "gendistiller.decoder_ffn_dim=64", "distilhubert.targets=[2,4]",
            "train.log_every=1", "train.val_every=0", "data.max_dev_batches=1", f"out_dir={out}", *extra]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random HuBERT encoder saved as an HF directory (config.json + model.safetensors)."""
    from speechdistill.models.factory import tiny_encoder

    path = tmp_path_factory.mktemp("models") / "tiny_hubert"
    tiny_encoder("hubert", seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def ctc_model_dir(tmp_path_factory, tone_corpus) -> Path:
    """An untrained CTC model directory (tiny encoder + linear head) with the tone corpus' vocabulary."""
    from speechdistill.asr.ctc_model import CTCHeadConfig, CTCModel
    from speechdistill.asr.vocab import CharVocab
    from speechdistill.data.manifest import read_manifest
    from speechdistill.models.factory import tiny_encoder

    torch.manual_seed(0)
    vocab = CharVocab.build([u.text for u in read_manifest(tone_corpus["train"])])
    path = tmp_path_factory.mktemp("models") / "ctc"
    CTCModel(tiny_encoder("hubert", num_layers=2, seed=1), vocab, CTCHeadConfig(head="linear")).save_pretrained(path)
    return path
@pytest.fixture(scope="session")
def tone_units(tone_corpus, tmp_path_factory):
    """Unit labels of the tone corpus (tiny:hubert layer 2, k=8): train and dev, one k-means model."""
    from speechdistill.run.units import UnitsConfig, run_units

    root = tmp_path_factory.mktemp("units")
    common = {"teacher": "tiny:hubert", "layer": 2, "k": 8, "fit_n_init": 1, "progress": False, "device": "cpu"}
    run_units(UnitsConfig(manifest=tone_corpus["train"], out=str(root / "train"), **common))
    run_units(UnitsConfig(manifest=tone_corpus["dev"], out=str(root / "dev"), kmeans=str(root / "train"), **common))
    return {"train": str(root / "train"), "dev": str(root / "dev")}
