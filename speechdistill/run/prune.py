"""``speechdistill prune``: retraining-free structured pruning to a MAC budget (STAT, magnitude)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from speechdistill.config import SEED_RULE, ConfigError, check_ranges

log = logging.getLogger(__name__)

REPORT_FILE = "prune_report.json"


@dataclass
class PruneConfig:
    method: Literal["stat", "stat-nocorrect", "magnitude"] = "stat"
    # Encoder to prune: anything load_encoder reads (HF HuBERT/WavLM/wav2vec2, *ForCTC, a pruned encoder).
    model: str = ""
    # Calibration manifest (JSONL); transcripts are not needed.
    calib: str = ""
    # Fraction of the encoder's MACs to keep, in (0, 1].
    keep_macs: float = 0.5
    out: str = ""
    num_calib: int = 256  # calibration utterances (seeded random subset)
    max_seconds: float = 20.0  # longer calibration utterances are cropped (seeded random window)
    prune_cnn: bool = False
    # With prune_cnn: split the MAC budget between CNN and transformer by measuring candidate splits on
    # search_utterances calibration utterances ("search"), or one global error threshold ("global").
    cnn_budget: Literal["search", "global"] = "search"
    search_utterances: int = 16
    sketch_rows: int = 4096  # CountSketch rows per module (0 = keep every frame)
    error_norm: Literal["residual", "module"] = "residual"
    min_neurons: int = 8
    min_heads: int = 1
    batch_seconds: float = 40.0  # padded audio seconds per calibration batch
    threads: int = 0  # torch CPU threads (0 = torch's choice)
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model is required (--model DIR|hub-id)")
        if not self.calib:
            raise ConfigError("calib is required (--calib MANIFEST)")
        if not self.out:
            raise ConfigError("out is required (--out DIR)")
        if not 0.0 < self.keep_macs <= 1.0:
            raise ConfigError(f"keep_macs is the fraction of MACs to keep and must be in (0, 1] (e.g. 0.5), got {self.keep_macs:g}")
        for name in ("max_seconds", "batch_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("num_calib", "min_neurons", "min_heads", "search_utterances"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sketch_rows < 0:
            raise ConfigError(f"sketch_rows must be >= 0 (0 = exact), got {self.sketch_rows}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = torch's choice), got {self.threads}")
        check_ranges("", self, seed=SEED_RULE)


def run_prune(cfg: PruneConfig) -> dict:
    """Prune ``cfg.model`` and write the pruned encoder and ``prune_report.json`` to ``cfg.out``
    (the folder is written whole or not at all; a used one needs ``overwrite``, a busy one is refused)."""
    from speechdistill.errors import OutputError
    from speechdistill.utils.lock import output_lock

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        what = "a model (config.json)" if (out / "config.json").exists() else "files"
        raise OutputError(f"{out} already holds {what}; pass --overwrite to replace the folder as a whole")
    with output_lock(out, "--out folder"):
        return _prune(cfg, out)


def _prune(cfg: PruneConfig, out: Path) -> dict:
    import torch

    from speechdistill.models.load import load_encoder
    from speechdistill.prune.calib import load_calibration_audio, make_batches, manifest_lengths, num_batches
    from speechdistill.prune.stat import PruneOptions, prune_model
    from speechdistill.utils.io import atomic_dir, atomic_write_json

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    encoder = load_encoder(cfg.model)
    opts = PruneOptions(
        prune_cnn=cfg.prune_cnn, sketch_rows=cfg.sketch_rows, seed=cfg.seed, min_heads=cfg.min_heads,
        min_neurons=cfg.min_neurons, error_norm=cfg.error_norm, cnn_budget=cfg.cnn_budget,
        search_utterances=cfg.search_utterances,
    )
    if cfg.method == "magnitude":
        lengths = manifest_lengths(cfg.calib, cfg.num_calib, cfg.max_seconds, cfg.seed)
        pruned, report = prune_model(
            encoder, None, cfg.method, cfg.keep_macs, options=opts, calib_lengths=lengths, source_model=cfg.model,
        )
    else:
        log.info("loading %d calibration utterances from %s", cfg.num_calib, cfg.calib)
        wavs = load_calibration_audio(cfg.calib, cfg.num_calib, cfg.max_seconds, cfg.seed)
        pruned, report = prune_model(
            encoder, make_batches(wavs, cfg.batch_seconds), cfg.method, cfg.keep_macs, options=opts,
            source_model=cfg.model, progress=True, total_batches=num_batches(wavs, cfg.batch_seconds),
        )
    report["calibration"]["manifest"] = str(cfg.calib)
    report["threads"] = torch.get_num_threads()
    report["config"] = asdict(cfg)
    with atomic_dir(out) as tmp:
        pruned.save_pretrained(tmp)
        atomic_write_json(tmp / REPORT_FILE, report)
    return report


def format_summary(cfg: PruneConfig, report: dict) -> str:
    heads = [layer["heads_after"] for layer in report["layers"]]
    neurons = [layer["neurons_after"] for layer in report["layers"]]
    out = Path(cfg.out)
    return (
        f"{cfg.method}: kept {report['keep_macs_achieved']:.3f} of MACs (target {cfg.keep_macs:g}), "
        f"params {report['params_before'] / 1e6:.2f}M -> {report['params_after'] / 1e6:.2f}M\n"
        f"heads per layer: {heads}\nFFN per layer: {neurons}\n"
        + (f"CNN channels: {report['conv_dims']}\n" if cfg.prune_cnn else "")
        + (f"CNN budget search: kept {report['cnn_budget_search']['chosen_cnn_fraction']:g} of the CNN's MACs "
           f"(last-state error {report['cnn_budget_search']['chosen_last_state_rel_error']:.4f} on "
           f"{report['cnn_budget_search']['search_utterances']} calibration utterances)\n"
           if "cnn_budget_search" in report else "")
        + f"time {report['wall_time_s']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB\n"
        f"pruned encoder: {out}\nreport: {out / REPORT_FILE}"
    )
