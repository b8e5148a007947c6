"""``speechdistill units``: k-means units of a teacher layer, and unit labels for a manifest.

The targets of HuBERT-style masked prediction (methods ``wid`` and ``masked_units`` of ``distill``).
Fits MiniBatchKMeans on the teacher's layer-``layer`` features of ``fit_manifest`` (or reuses
``kmeans=DIR`` / a model already in ``out``), then labels every utterance of ``manifest`` into
``out``: streamed, resumable (rerun the same command after an interruption), with a progress bar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from speechdistill.config import ConfigError
from speechdistill.units.errors import UnitsError

log = logging.getLogger(__name__)


@dataclass
class UnitsConfig:
    teacher: str = "facebook/hubert-base-ls960"
    # Teacher layer whose features are clustered (0 = input of the first transformer layer).
    layer: int = 9
    manifest: str = ""  # utterances to label
    out: str = "units"
    # An existing k-means folder to label with; empty: fit one into OUT (or reuse the one OUT holds).
    kmeans: str = ""
    k: int = 500
    fit_manifest: str = ""  # empty: the manifest itself
    # Frames used to fit (float32 in memory: 500k x 768 is 1.5 GB); utterances drawn in seeded order.
    fit_max_frames: int = 500_000
    fit_batch_size: int = 10000
    fit_max_iter: int = 100
    fit_n_init: int = 20
    fit_only: bool = False
    seed: int = 0
    max_batch_seconds: float = 120.0
    max_batch_size: int = 32
    num_workers: int = 0  # audio-loading processes
    shard_size: int = 1000  # utterances per label shard (the unit of resumption)
    on_bad_audio: str = "error"  # error | skip
    device: str = "auto"  # auto | cpu | cuda[:N]
    # Stop after writing this many shards in this invocation (tests of interruption); 0 = no limit.
    stop_after: int = 0
    progress: bool = True

    def validate(self) -> None:
        if not self.manifest:
            raise ConfigError("manifest is required (the utterances to label, e.g. manifest=corpus/train.jsonl)")
        if self.layer < 0:
            raise ConfigError(f"layer must be >= 0, got {self.layer}")
        if self.k < 2:
            raise ConfigError(f"k must be >= 2, got {self.k}")
        if self.shard_size < 1 or self.fit_max_frames < 1:
            raise ConfigError("shard_size and fit_max_frames must be >= 1")
        if self.on_bad_audio not in ("error", "skip"):
            raise ConfigError(f"on_bad_audio must be error or skip, got {self.on_bad_audio!r}")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _kmeans_for(cfg: UnitsConfig, teacher, utts_fit, out: Path, kw: dict):
    from speechdistill.units.extract import collect_fit_features
    from speechdistill.units.kmeans import CENTRES_FILE, KMeansModel, fit_kmeans

    if cfg.kmeans:
        km = KMeansModel.load(cfg.kmeans)
        where = cfg.kmeans
    elif (out / CENTRES_FILE).is_file():
        km = KMeansModel.load(out)
        where = str(out)
        log.info("reusing the k-means model in %s (delete it to fit a new one)", out)
    else:
        km = None
        where = ""
    if km is not None:
        if km.dim != teacher.hidden_size:
            raise UnitsError(
                f"k-means model {where} has {km.dim}-dim centres but layer {cfg.layer} of teacher {cfg.teacher} "
                f"is {teacher.hidden_size} wide: it was fitted on another teacher; give the matching kmeans= or fit "
                "a new one (kmeans= empty, another out=)"
            )
        for key, want in (("teacher", cfg.teacher), ("layer", cfg.layer)):
            if key in km.meta and km.meta[key] != want:
                log.warning("k-means model %s was fitted on %s=%r, labelling with %s=%r", where, key, km.meta[key],
                            key, want)
        return km
    feats = collect_fit_features(teacher, cfg.layer, utts_fit, cfg.fit_max_frames, seed=cfg.seed, **kw)
    km = fit_kmeans(feats, cfg.k, seed=cfg.seed, batch_size=cfg.fit_batch_size, max_iter=cfg.fit_max_iter,
                    n_init=cfg.fit_n_init, meta={"teacher": cfg.teacher, "layer": cfg.layer,
                                                 "fit_manifest": cfg.fit_manifest or cfg.manifest})
    km.save(out)
    log.info("k-means model written to %s", out)
    return km


def run_units(cfg: UnitsConfig) -> dict:
    """Fit (or load) the k-means model and label ``cfg.manifest``; returns a summary."""
    from speechdistill.data.dataset import load_utterances
    from speechdistill.models.load import load_teacher
    from speechdistill.units.extract import check_layer, hop_samples, label_utterances
    from speechdistill.units.store import LabelWriter

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    utts, _ = load_utterances(cfg.manifest, cfg.on_bad_audio)
    utts_fit = load_utterances(cfg.fit_manifest, cfg.on_bad_audio)[0] if cfg.fit_manifest else utts
    device = _device(cfg.device)
    teacher = load_teacher(cfg.teacher, seed=cfg.seed).to(device)
    check_layer(teacher, cfg.layer)
    kw = {"max_batch_seconds": cfg.max_batch_seconds, "max_batch_size": cfg.max_batch_size,
          "on_bad_audio": cfg.on_bad_audio, "device": device, "progress": cfg.progress,
          "num_workers": cfg.num_workers}
    km = _kmeans_for(cfg, teacher, utts_fit, out, kw)
    if km.k > 0 and cfg.kmeans == "" and cfg.k != km.k:
        log.warning("the k-means model has k=%d (config k=%d): labels use k=%d", km.k, cfg.k, km.k)
    summary = {"out": str(out), "k": km.k, "layer": cfg.layer, "teacher": cfg.teacher}
    if cfg.fit_only:
        return {**summary, "complete": False, "fit_only": True}
    writer = LabelWriter(out, {
        "teacher": cfg.teacher, "layer": cfg.layer, "k": km.k, "kmeans_fingerprint": km.fingerprint,
        "kmeans": str(Path(cfg.kmeans).resolve()) if cfg.kmeans else str(out.resolve()),
        "hop": hop_samples(teacher.config), "frame_rule": "speechdistill.models.frames.config_output_lengths",
        "manifest": str(Path(cfg.manifest).resolve()), "dim": km.dim,
    }, shard_size=cfg.shard_size)
    finished = label_utterances(teacher, cfg.layer, km, utts, writer, stop_after=cfg.stop_after, **kw)
    if finished:
        writer.finish(total=len(utts))
        log.info("unit labels for %d utterance(s), %d frames, written to %s", len(writer.done), writer.frames, out)
    else:
        log.warning("stopped after %d shard(s); rerun the same command to continue", cfg.stop_after)
    return {**summary, "complete": finished, "utterances": len(writer.done), "frames": writer.frames}
