"""Evaluate a CTC model on a manifest: greedy decoding, WER/CER, real-time factor.

RTF is model compute (forward + greedy decode) over audio duration, measured after one warm-up
forward, at a fixed thread count; audio loading is timed separately so a slow disk does not pass
for a slow model.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from speechdistill import SAMPLE_RATE
from speechdistill.asr.ctc_model import CTCModel
from speechdistill.asr.decode import greedy_decode
from speechdistill.asr.metrics import error_rates, normalize_text
from speechdistill.data.errors import BadInputError
from speechdistill.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
HYPOTHESES_FILE = "hypotheses.jsonl"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_model(
    model: CTCModel | str | Path,
    manifest: str | Path,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    max_batch_seconds: float = 60.0,
    max_batch_size: int | None = None,
    on_bad_audio: str = "error",
    device: str = "cpu",
) -> dict[str, Any]:
    """Decode ``manifest`` with ``model`` (a CTCModel, its directory, or an exported ``.onnx`` CTC model with
    vocab.json beside it, run by onnxruntime); write report.json and hypotheses.jsonl to ``out_dir`` (if
    given) and return the report.

    ``threads``: torch intra-op threads for the run (restored afterwards); None keeps the current
    setting. ``max_batch_size`` defaults to 1 on CPU (padding would inflate the RTF) and 16 on GPU.
    """
    from speechdistill.data.dataset import build_eval_loader

    dev = resolve_device(device)
    model_path = None
    backend = "torch"
    if not isinstance(model, CTCModel):
        model_path = str(model)
        if model_path.endswith(".onnx"):
            from speechdistill.export.onnx_ctc import OnnxCTCModel

            model = OnnxCTCModel(model_path, threads=threads or 0)
            backend = "onnxruntime"
        else:
            model = CTCModel.from_pretrained(model)
    model = model.to(dev).eval()
    if max_batch_size is None:
        max_batch_size = 1 if dev.type == "cpu" else 16
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        torch.set_num_threads(threads)
    try:
        loader = build_eval_loader(
            str(manifest), max_batch_seconds=max_batch_seconds, max_batch_size=max_batch_size,
            num_workers=0, on_bad_audio=on_bad_audio,
        )
        no_text = [u.id for u in loader.utterances if not u.text]
        if no_text:
            raise BadInputError(
                f"{manifest}: {len(no_text)} utterance(s) have no 'text' (e.g. {no_text[:3]}); "
                "evaluation needs reference transcripts"
            )
        _warm_up(model, dev)
        ids: list[str] = []
        refs: list[str] = []
        hyps: list[str] = []
        audio_seconds = 0.0
        compute_seconds = 0.0
        t_start = time.perf_counter()
        t_fetch = t_start
        load_seconds = 0.0
        for batch in loader:
            load_seconds += time.perf_counter() - t_fetch
            batch = batch.to(dev)
            t0 = time.perf_counter()
            with torch.inference_mode():
                log_probs, frame_lengths = model(batch.wav, batch.lengths)
                batch_hyps = greedy_decode(log_probs, frame_lengths, model.vocab)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            compute_seconds += time.perf_counter() - t0
            audio_seconds += float(batch.lengths.sum()) / SAMPLE_RATE
            ids.extend(batch.ids)
            refs.extend(t or "" for t in batch.texts)
            hyps.extend(batch_hyps)
            t_fetch = time.perf_counter()
        wall_seconds = time.perf_counter() - t_start
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)

    if not ids:
        raise BadInputError(f"{manifest}: no utterance could be evaluated (all skipped?)")
    rates = error_rates(refs, hyps)
    params = model.num_parameters()
    skipped = [{"path": p, "reason": r} for p, r in loader.skipped]
    report: dict[str, Any] = {
        "model": model_path or model.encoder_source,
        "manifest": str(manifest),
        "wer": rates.wer,
        "cer": rates.cer,
        "num_utterances": len(ids),
        "audio_seconds": audio_seconds,
        "audio_hours": audio_seconds / 3600.0,
        "word_errors": rates.word_errors,
        "ref_words": rates.ref_words,
        "substitutions": rates.substitutions,
        "deletions": rates.deletions,
        "insertions": rates.insertions,
        "char_errors": rates.char_errors,
        "ref_chars": rates.ref_chars,
        "params": params,
        "params_encoder": params["encoder"],
        "params_total": params["total"],
        "backend": backend,
        "rtf": compute_seconds / max(audio_seconds, 1e-9),
        "processing_seconds": compute_seconds,
        "load_seconds": load_seconds,
        "wall_seconds": wall_seconds,
        "threads": used_threads,
        "device": str(dev),
        "max_batch_size": max_batch_size,
        "decoding": "greedy CTC, no LM",
        "normalization": "uppercase, punctuation removed except apostrophes, spaces collapsed",
        "skipped": len(skipped),
        "skipped_files": skipped,
    }
    if backend == "onnxruntime":
        report["model_file_mb"] = model.file_mb
        report["precision"] = model.metadata.get("precision", "")
        report["threads"] = threads or 0  # onnxruntime intra-op threads (0 = its default)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for uid, ref, hyp, e in zip(ids, refs, hyps, rates.per_utterance):
            lines.append(json.dumps(
                {"id": uid, "ref": normalize_text(ref), "hyp": normalize_text(hyp), "raw_ref": ref, **e.to_dict()},
                ensure_ascii=False,
            ))
        atomic_write_text(out_dir / HYPOTHESES_FILE, "".join(line + "\n" for line in lines))
        atomic_write_json(out_dir / REPORT_FILE, report)
        log.info("wrote %s and %s", out_dir / REPORT_FILE, out_dir / HYPOTHESES_FILE)
    if skipped:
        log.warning("%d file(s) skipped; they are listed in the report", len(skipped))
    return report


@torch.inference_mode()
def _warm_up(model: CTCModel, dev: torch.device) -> None:
    """One short forward so one-off allocations and kernel selection do not count towards RTF."""
    wav = torch.zeros(1, SAMPLE_RATE, device=dev)
    model(wav, torch.tensor([SAMPLE_RATE], device=dev))


def format_report(report: dict[str, Any]) -> str:
    """A small plain-text table for the terminal."""
    params = report["params"]
    rows = [
        ("WER", f"{100 * report['wer']:.2f} %  ({report['word_errors']}/{report['ref_words']} words)"),
        ("CER", f"{100 * report['cer']:.2f} %  ({report['char_errors']}/{report['ref_chars']} chars)"),
        ("utterances", f"{report['num_utterances']} ({report['audio_hours']:.3f} h audio)"),
        ("params", f"encoder {params['encoder'] / 1e6:.2f} M, total {params['total'] / 1e6:.2f} M"
         if report.get("backend", "torch") == "torch" else
         f"{params['total'] / 1e6:.2f} M weights in the file ({report.get('precision', '')}, "
         f"{report.get('model_file_mb', 0):.1f} MB, onnxruntime)"),
        ("RTF", (f"{report['rtf']:.4f} ({report['threads']} thread(s), {report['device']}, "
                 f"batch <= {report['max_batch_size']})")),
        ("skipped", str(report["skipped"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
