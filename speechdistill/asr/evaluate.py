"""Evaluate a CTC model on a manifest: greedy decoding (or beam search with an n-gram LM, optional
extra ``lm``), WER/CER, real-time factor, MACs.

RTF is model compute (forward + decoding) over audio duration, measured after one warm-up forward,
at a fixed thread count; audio loading is timed separately so a slow disk does not pass for a slow
model.  MACs per second of audio are counted by torch's FlopCounterMode (``report.stats.count_macs``)
on a 1 s input; the BiLSTM head, which FlopCounterMode does not see, is added by its formula.

Long recordings: attention cost and memory grow with the square of the length (an hour of audio would
need tens of GB), so an utterance longer than ``max_seconds`` is, per ``on_long_audio``, decoded in
consecutive ``max_seconds`` chunks whose log-probs are joined before decoding (``chunk``; words
at a cut may suffer), refused naming the file (``error``), or left out and listed (``skip``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from speechdistill import SAMPLE_RATE
from speechdistill.asr.ctc_model import CTCModel
from speechdistill.asr.decode import greedy_decode
from speechdistill.asr.metrics import error_rates, normalize_text
from speechdistill.config import ConfigError
from speechdistill.data.batch import pad_waveforms
from speechdistill.data.errors import BadInputError
from speechdistill.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
HYPOTHESES_FILE = "hypotheses.jsonl"


LONG_AUDIO_POLICIES = ("chunk", "error", "skip")


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a device this machine does not have is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {device!r} is not a device name (cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (f"this torch build ({torch.__version__}) has no CUDA support" if torch.version.cuda is None
                   else "no GPU is visible")
            raise ConfigError(f"device {device!r}: {why}; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) are visible")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported (cpu, cuda, cuda:N or auto)")
    return dev


def evaluate_model(
    model: CTCModel | str | Path,
    manifest: str | Path,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    max_batch_seconds: float = 60.0,
    max_batch_size: int | None = None,
    on_bad_audio: str = "error",
    device: str = "cpu",
    max_seconds: float = 60.0,
    on_long_audio: str = "chunk",
    lm=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode ``manifest`` with ``model`` (a CTCModel, its directory, or an exported ``.onnx`` CTC model with
    vocab.json beside it, run by onnxruntime); write report.json and hypotheses.jsonl to ``out_dir`` (if
    given) and return the report.

    ``threads``: torch intra-op threads for the run (restored afterwards); None keeps the current
    setting. ``max_batch_size`` defaults to 1 on CPU (padding would inflate the RTF) and 16 on GPU.
    ``max_seconds`` / ``on_long_audio``: the length policy (module doc); ``max_seconds=0``: no limit.
    ``lm``: an ``asr.lm_decode.LMConfig`` with a path for beam search with an n-gram LM (else greedy).
    """
    from speechdistill.data.dataset import build_eval_loader

    if on_long_audio not in LONG_AUDIO_POLICIES:
        raise ConfigError(f"on_long_audio={on_long_audio!r}: choose one of {', '.join(LONG_AUDIO_POLICIES)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads}: must be >= 1 (or None for torch's current setting)")
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
        torch.set_num_threads(threads)
    chunk = on_long_audio == "chunk" and max_seconds > 0
    chunked: list[str] = []
    try:
        loader = build_eval_loader(
            str(manifest), max_batch_seconds=max_batch_seconds, max_batch_size=max_batch_size,
            num_workers=0, on_bad_audio=on_bad_audio, max_item_seconds=0.0 if chunk else max_seconds,
            on_long=on_long_audio, long_knob="max_seconds, on_long_audio=chunk|error|skip",
        )
        no_text = [u.id for u in loader.utterances if not u.text]
        if no_text:
            raise BadInputError(
                f"{manifest}: {len(no_text)} utterance(s) have no 'text' (e.g. {no_text[:3]}); "
                "evaluation needs reference transcripts"
            )
        decoder = None
        if lm is not None and lm.path:
            from speechdistill.asr.lm_decode import LMDecoder

            decoder = LMDecoder(lm, model.vocab)

        def decode(log_probs, frame_lengths) -> list[str]:
            if decoder is not None:
                return decoder.decode(log_probs, frame_lengths)
            return greedy_decode(log_probs, frame_lengths, model.vocab)

        _warm_up(model, dev)
        ids: list[str] = []
        refs: list[str] = []
        hyps: list[str] = []
        audio_seconds = 0.0
        compute_seconds = 0.0
        t_start = time.perf_counter()
        t_fetch = t_start
        load_seconds = 0.0
        pbar = tqdm(total=len(loader), desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True)
        for batch in loader:
            load_seconds += time.perf_counter() - t_fetch
            batch = batch.to(dev)
            t0 = time.perf_counter()
            with torch.inference_mode():
                limit = int(max_seconds * SAMPLE_RATE)
                if chunk and int(batch.lengths.max()) > limit:
                    batch_hyps = _decode_long(model, batch, limit, int(max_batch_seconds * SAMPLE_RATE), decode)
                    chunked.extend(i for i, n in zip(batch.ids, batch.lengths.tolist()) if n > limit)
                else:
                    log_probs, frame_lengths = model(batch.wav, batch.lengths)
                    batch_hyps = decode(log_probs, frame_lengths)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            compute_seconds += time.perf_counter() - t0
            audio_seconds += float(batch.lengths.sum()) / SAMPLE_RATE
            ids.extend(batch.ids)
            refs.extend(t or "" for t in batch.texts)
            hyps.extend(batch_hyps)
            pbar.update(1)
            t_fetch = time.perf_counter()
        pbar.close()
        wall_seconds = time.perf_counter() - t_start
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)

    if not ids:
        raise BadInputError(f"{manifest}: no utterance could be evaluated (all skipped?)")
    rates = error_rates(refs, hyps)
    params = model.num_parameters()
    # FlopCounterMode sees only PyTorch ops: an ONNX file's MACs are those of its PyTorch source.
    macs = ctc_macs_per_second(model) if backend == "torch" else {"encoder": None, "total": None}
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
        "encoder_macs_per_second": macs["encoder"],
        "total_macs_per_second": macs["total"],
        "backend": backend,
        "rtf": compute_seconds / max(audio_seconds, 1e-9),
        "processing_seconds": compute_seconds,
        "load_seconds": load_seconds,
        "wall_seconds": wall_seconds,
        "threads": used_threads,
        "device": str(dev),
        "max_batch_size": max_batch_size,
        "decoding": decoder.describe() if decoder is not None else "greedy CTC, no LM",
        "normalization": "uppercase, punctuation removed except apostrophes, spaces collapsed",
        "skipped": len(skipped),
        "skipped_files": skipped,
        "long_audio": {"max_seconds": max_seconds, "policy": on_long_audio, "chunked": chunked},
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
    if chunked:
        log.warning("%d utterance(s) longer than %g s decoded in %g s chunks (e.g. %s)", len(chunked), max_seconds,
                    max_seconds, chunked[0])
    return report


def _decode_long(model: CTCModel, batch, limit: int, max_batch_samples: int, decode) -> list[str]:
    """Hypotheses for a batch holding utterances longer than ``limit`` samples: those are cut into
    consecutive chunks of at most ``limit`` samples (run a few at a time within ``max_batch_samples``),
    and each utterance's chunk log-probs are joined in time before ``decode`` (greedy or beam search)."""
    hyps = []
    for wav, n in zip(batch.wav, batch.lengths.tolist()):
        wav = wav[:n]
        starts = list(range(0, n, limit))
        if len(starts) > 1 and n - starts[-1] < SAMPLE_RATE:
            starts.pop()  # a tail under a second joins the chunk before it (too short on its own)
        bounds = [(a, starts[i + 1] if i + 1 < len(starts) else n) for i, a in enumerate(starts)]
        per_batch = max(1, max_batch_samples // max(b - a for a, b in bounds))
        pieces = []
        for i in range(0, len(bounds), per_batch):
            group = bounds[i : i + per_batch]
            padded, lengths = pad_waveforms([wav[a:b] for a, b in group])
            log_probs, frame_lengths = model(padded.to(batch.wav.device), lengths.to(batch.wav.device))
            pieces += [log_probs[j, : int(frame_lengths[j])] for j in range(len(group))]
        joined = torch.cat(pieces)[None]
        hyps += decode(joined, torch.tensor([joined.shape[1]]))
    return hyps


@torch.inference_mode()
def _warm_up(model: CTCModel, dev: torch.device) -> None:
    """One short forward so one-off allocations and kernel selection do not count towards RTF."""
    wav = torch.zeros(1, SAMPLE_RATE, device=dev)
    model(wav, torch.tensor([SAMPLE_RATE], device=dev))


def ctc_macs_per_second(model: CTCModel) -> dict[str, int]:
    """MACs per second of audio: the encoder, and the whole CTC model (BiLSTM by formula)."""
    from speechdistill.models.frames import config_output_lengths
    from speechdistill.report.stats import count_macs

    model = model.cpu() if next(model.parameters()).device.type != "cpu" else model
    encoder = count_macs(model.encoder, 1.0)
    total = count_macs(model, 1.0)
    if model.lstm is not None:  # FlopCounterMode does not count nn.LSTM
        cfg = model.encoder.config
        frames = int(config_output_lengths(cfg if hasattr(cfg, "conv_stride") else cfg.build_frontend_config(),
                                           SAMPLE_RATE))
        h, size = model.lstm.hidden_size, model.lstm.input_size
        for _ in range(model.lstm.num_layers):
            total += frames * 2 * 4 * h * (size + h)  # 2 directions, 4 gates
            size = 2 * h
    return {"encoder": int(encoder), "total": int(total)}


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
        ("MACs", (f"encoder {report['encoder_macs_per_second'] / 1e9:.3f} G, total "
                  f"{report['total_macs_per_second'] / 1e9:.3f} G per second of audio")
         if report.get("total_macs_per_second") is not None else "not counted for an ONNX file (see its source)"),
        ("decoding", report["decoding"]),
        ("RTF", (f"{report['rtf']:.4f} ({report['threads']} thread(s), {report['device']}, "
                 f"batch <= {report['max_batch_size']})")),
        ("skipped", str(report["skipped"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
