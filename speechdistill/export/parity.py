"""Parity of an exported model with the PyTorch model it came from.

Every check runs the exported model and the ORIGINAL PyTorch model (the project's ``encode``, which
runs group-norm CNNs per utterance) on the same inputs and compares the valid frames only (frames past
an utterance's ``frame_lengths`` are padding and undefined in both).  Inputs are random waveforms of
lengths the export never saw (default 0.7 s, 2.3 s and 4 s, each alone and as one right-padded
batch) plus, with a manifest, real utterances (each alone and as one padded batch).

Judgement (fp32 by tolerance; int8 by WER, since int8 has doubled WER in public reports):

- fp32 (ONNX or a re-loaded safetensors directory): max |export - reference| over valid frames must be
  at most ``rtol * max|reference| + atol`` in every case, and frame lengths must match exactly.
- int8: tensors are not expected to match, so relative L2 error and cosine similarity are reported,
  never judged.  With a CTC head and a manifest that has transcripts, int8 is judged by WER instead:
  ``WER(int8) - WER(fp32)`` (both onnxruntime, greedy CTC decoding with the model's vocabulary, the
  first ``wer_utterances`` transcribed utterances, whole) must stay within ``int8_max_wer_increase``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from speechdistill import SAMPLE_RATE
from speechdistill.data.batch import pad_waveforms
from speechdistill.errors import SpeechDistillError

log = logging.getLogger(__name__)

PARITY_FILE = "parity.json"
# Longest utterance the int8 WER check decodes whole (longer ones are left out).
WER_MAX_SECONDS = 60.0
# The report of a failed export: beside, not over, the parity.json of the last good export it leaves in place.
FAILED_PARITY_FILE = "parity.failed.json"

# (waveform [B, S] float32, lengths [B] int64) -> (output with a time axis, frame_lengths [B])
Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ParityError(SpeechDistillError, RuntimeError):
    """An exported model disagrees with its PyTorch source beyond the tolerance."""

    exit_code = 1


@dataclass
class ParityOptions:
    rtol: float = 1e-4  # allowed max abs error as a fraction of max|reference| (per case)
    atol: float = 1e-6  # absolute floor, so all-zero references do not demand bit equality
    lengths_s: tuple[float, ...] = (0.7, 2.3, 4.0)  # random inputs; the export traced at another length
    seed: int = 0
    manifest: str | None = None  # real inputs (JSONL manifest); transcripts enable the int8 WER check
    max_utterances: int = 4
    max_seconds: float = 20.0  # real utterances are cut to this many seconds
    int8_max_wer_increase: float = 0.02  # absolute: 0.02 = 2 WER points
    wer_utterances: int = 200  # int8 WER check: the first N manifest utterances with text, whole (not cut)
    threads: int = 0  # onnxruntime intra-op threads for the checks (0 = onnxruntime's default)

    def validate(self) -> None:
        from speechdistill.config import ConfigError
        from speechdistill.data.audio import MIN_SAMPLES

        if self.rtol < 0 or self.atol < 0:
            raise ConfigError("parity.rtol (--tolerance) and parity.atol (--atol) must be >= 0")
        if not self.lengths_s:
            raise ConfigError("parity.lengths_s (--parity-lengths) needs at least one length")
        shortest = MIN_SAMPLES / SAMPLE_RATE
        if any(s < shortest for s in self.lengths_s):
            raise ConfigError(
                f"parity.lengths_s (--parity-lengths) must be at least {shortest:g} s each (the CNN's receptive "
                f"field), got {list(self.lengths_s)}"
            )
        for name in ("max_utterances", "wer_utterances"):
            if getattr(self, name) < 1:
                raise ConfigError(f"parity.{name} must be >= 1")
        if self.max_seconds <= 0 or self.int8_max_wer_increase < 0:
            raise ConfigError("parity.max_seconds must be positive and parity.int8_max_wer_increase >= 0")
        if self.threads < 0:
            raise ConfigError("parity.threads must be >= 0 (0 = onnxruntime's default)")
        from speechdistill.config import SEED_RULE, check_ranges

        check_ranges("parity", self, seed=SEED_RULE)


@dataclass
class ParityInput:
    name: str
    source: str  # "random" | "manifest"
    wav: torch.Tensor  # [B, S] float32, right-padded with zeros
    lengths: torch.Tensor  # [B] int64
    texts: list[str | None] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:
        return [round(int(n) / SAMPLE_RATE, 3) for n in self.lengths]


@dataclass
class ParityCase:
    name: str
    source: str
    seconds: list[float]
    max_abs_err: float
    ref_max_abs: float
    rel_err: float  # max_abs_err / max|reference|
    bound: float  # the max_abs_err this case was allowed (fp32 only)
    frame_lengths_match: bool
    passed: bool
    rel_l2: float | None = None  # ||export - ref|| / ||ref|| over valid frames
    cosine: float | None = None  # mean cosine similarity of valid frames (feature vectors)


@dataclass
class ParityReport:
    target: str  # "onnx-fp32", "onnx-int8", "safetensors"
    judged_by: str  # "tolerance", "wer", "report-only"
    passed: bool
    cases: list[ParityCase]
    max_abs_err: float
    max_rel_err: float
    min_cosine: float | None = None
    wer: dict[str, float | int] | None = None
    message: str = ""

    def to_dict(self) -> dict:
        """JSON-safe: non-finite numbers (no comparison possible, bound not applicable) become null."""
        return _finite_or_none(asdict(self))


def _finite_or_none(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


# -- inputs ---------------------------------------------------------------------------------------


def random_inputs(lengths_s: Sequence[float], seed: int = 0) -> list[ParityInput]:
    """Each length alone (batch 1) and all of them as one right-padded batch."""
    g = torch.Generator().manual_seed(seed)
    waves = []
    for s in lengths_s:
        n = round(s * SAMPLE_RATE)
        if n < 400:
            raise ValueError(f"parity length {s} s is shorter than one frame (400 samples)")
        waves.append(0.1 * torch.randn(n, generator=g))
    cases = [
        ParityInput(f"random-{s:g}s", "random", w[None], torch.tensor([w.numel()]))
        for s, w in zip(lengths_s, waves)
    ]
    if len(waves) > 1:
        wav, lengths = pad_waveforms(waves)
        cases.append(ParityInput("random-padded-batch", "random", wav, lengths))
    return cases


def manifest_inputs(manifest: str | Path, max_utterances: int, max_seconds: float) -> list[ParityInput]:
    """The first utterances of a manifest (16 kHz, cut to ``max_seconds``): alone and as one padded batch."""
    from speechdistill.data.audio import load_utterance
    from speechdistill.data.errors import ManifestError
    from speechdistill.data.manifest import read_manifest

    utts = read_manifest(manifest)[:max_utterances]
    if not utts:
        raise ManifestError(str(manifest), None, "no utterances for the parity check")
    waves, texts = [], []
    for u in utts:
        audio = load_utterance(u)[: int(max_seconds * SAMPLE_RATE)]
        waves.append(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
        texts.append(u.text)
    cases = [
        ParityInput(f"manifest-{u.id}", "manifest", w[None], torch.tensor([w.numel()]), [t])
        for u, w, t in zip(utts, waves, texts)
    ]
    if len(waves) > 1:
        wav, lengths = pad_waveforms(waves)
        cases.append(ParityInput("manifest-padded-batch", "manifest", wav, lengths, texts))
    return cases


def wer_inputs(manifest: str | Path, max_utterances: int, max_seconds: float = 0.0) -> list[ParityInput]:
    """Whole utterances with transcripts, one per input, for the int8 WER judgement; utterances longer
    than ``max_seconds`` (0 = no limit) are left out (whole, an hour-long file would not fit in memory)."""
    from speechdistill.data.audio import load_utterance
    from speechdistill.data.manifest import read_manifest

    out = []
    for u in read_manifest(manifest):
        if len(out) >= max_utterances:
            break
        if not u.text:
            continue
        if max_seconds and u.duration > max_seconds:
            log.info("int8 WER check: leaving out %s (%.1f s, above %g s)", u.path, u.duration, max_seconds)
            continue
        audio = load_utterance(u)
        w = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        out.append(ParityInput(f"manifest-{u.id}", "manifest", w[None], torch.tensor([w.numel()]), [u.text]))
    return out


def build_inputs(options: ParityOptions) -> list[ParityInput]:
    cases = random_inputs(options.lengths_s, options.seed)
    if options.manifest:
        cases += manifest_inputs(options.manifest, options.max_utterances, options.max_seconds)
    return cases


# -- runners --------------------------------------------------------------------------------------


def ort_runner(session) -> Runner:
    """Wrap an onnxruntime session whose inputs are (waveform, lengths) and outputs (main, frame_lengths)."""
    names = [i.name for i in session.get_inputs()]

    def run(wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {names[0]: wav.numpy().astype(np.float32, copy=False)}
        if len(names) > 1:
            feeds[names[1]] = lengths.numpy().astype(np.int64, copy=False)
        main, frame_lengths = session.run(None, feeds)[:2]
        return torch.from_numpy(main), torch.from_numpy(frame_lengths)

    return run


@torch.no_grad()
def reference_outputs(
    runner: Runner, inputs: Sequence[ParityInput]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        tuple(
            t.detach().float().cpu() if t.is_floating_point() else t.cpu() for t in runner(i.wav, i.lengths)
        )
        for i in inputs
    ]


# -- comparison -----------------------------------------------------------------------------------


def _valid_frames(x: torch.Tensor, frame_lengths: torch.Tensor, time_axis: int) -> list[torch.Tensor]:
    """Per utterance: valid frames moved to [T_i, ..., feature] (time first, feature last)."""
    out = []
    for b, n in enumerate(frame_lengths.tolist()):
        xb = x[b].narrow(time_axis - 1, 0, int(n))
        out.append(xb.movedim(time_axis - 1, 0).reshape(int(n), -1, xb.shape[-1]))
    return out


def _case_stats(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float, float, float]:
    ref64, got64 = ref.double(), got.double()
    max_abs = float((ref64 - got64).abs().max()) if ref.numel() else 0.0
    ref_max = float(ref64.abs().max()) if ref.numel() else 0.0
    rel_l2 = float((ref64 - got64).norm() / ref64.norm().clamp(min=1e-30)) if ref.numel() else 0.0
    flat_r, flat_g = ref64.reshape(-1, ref.shape[-1]), got64.reshape(-1, ref.shape[-1])
    cos = (
        float(torch.nn.functional.cosine_similarity(flat_r, flat_g, dim=-1, eps=1e-12).mean())
        if ref.numel()
        else 1.0
    )
    return max_abs, ref_max, rel_l2, cos


def compare(
    refs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    test: Runner,
    inputs: Sequence[ParityInput],
    time_axis: int,
    rtol: float,
    atol: float,
) -> list[ParityCase]:
    """Run ``test`` on every input and compare valid frames with the precomputed references."""
    cases = []
    for inp, (ref_out, ref_fl) in zip(inputs, refs):
        with torch.no_grad():
            got_out, got_fl = test(inp.wav, inp.lengths)
        fl_match = got_fl.shape == ref_fl.shape and bool((got_fl.long() == ref_fl.long()).all())
        # Both outputs must hold every valid frame (a shorter time axis is a broken export, not padding).
        needed = int(ref_fl.max()) if ref_fl.numel() else 0
        shapes_ok = (
            got_out.shape[0] == ref_out.shape[0]
            and min(got_out.shape[time_axis], ref_out.shape[time_axis]) >= needed
        )
        if not (fl_match and shapes_ok):
            cases.append(
                ParityCase(
                    inp.name, inp.source, inp.seconds, float("inf"), 0.0, float("inf"), 0.0, False, False
                )
            )
            continue
        r = torch.cat(_valid_frames(ref_out, ref_fl.long(), time_axis))
        g = torch.cat(_valid_frames(got_out.float(), ref_fl.long(), time_axis))
        max_abs, ref_max, rel_l2, cos = _case_stats(r, g)
        bound = rtol * ref_max + atol
        cases.append(
            ParityCase(
                inp.name,
                inp.source,
                inp.seconds,
                max_abs,
                ref_max,
                max_abs / max(ref_max, 1e-30),
                bound,
                True,
                max_abs <= bound,
                rel_l2,
                cos,
            )
        )
    return cases


def summarize(
    target: str,
    judged_by: str,
    cases: list[ParityCase],
    passed: bool | None = None,
    wer: dict[str, float | int] | None = None,
    message: str = "",
) -> ParityReport:
    if passed is None:
        passed = all(c.passed for c in cases)
    cosines = [c.cosine for c in cases if c.cosine is not None]
    report = ParityReport(
        target=target,
        judged_by=judged_by,
        passed=passed,
        cases=cases,
        max_abs_err=max((c.max_abs_err for c in cases), default=0.0),
        max_rel_err=max((c.rel_err for c in cases), default=0.0),
        min_cosine=min(cosines) if cosines else None,
        wer=wer,
        message=message,
    )
    if not report.message:
        report.message = describe(report)
    return report


def describe(report: ParityReport) -> str:
    """One line: how far the export is from PyTorch, and (on failure) by how much it missed."""
    head = (
        f"{report.target}: max abs error {report.max_abs_err:.3g}, max relative error "
        f"{report.max_rel_err:.3g} (of max|reference|) over {len(report.cases)} case(s)"
    )
    if report.min_cosine is not None and report.judged_by != "tolerance":
        head += f", min cosine {report.min_cosine:.6f}"
    if report.wer:
        head += ", WER " + ", ".join(
            f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in report.wer.items()
        )
    if report.passed:
        return head + ": passed"
    mismatch = next((c for c in report.cases if not c.frame_lengths_match), None)
    if mismatch is not None:
        return (
            head + f": FAILED, frame lengths or output shapes differ from PyTorch in case {mismatch.name!r}"
        )
    if report.judged_by == "tolerance" and report.cases:
        worst = max(report.cases, key=lambda c: c.max_abs_err - c.bound)
        ratio = f" ({worst.max_abs_err / worst.bound:.1f}x the bound)" if worst.bound > 0 else ""
        return head + (
            f": FAILED in case {worst.name!r}: max abs error {worst.max_abs_err:.3g} exceeds the bound "
            f"{worst.bound:.3g} by {worst.max_abs_err - worst.bound:.3g}{ratio}"
        )
    return head + ": FAILED"


def fp32_report(
    target: str, refs, test: Runner, inputs, time_axis: int, options: ParityOptions
) -> ParityReport:
    cases = compare(refs, test, inputs, time_axis, options.rtol, options.atol)
    return summarize(target, "tolerance", cases)


# -- int8 -----------------------------------------------------------------------------------------


def transcribe(runner: Runner, inputs: Sequence[ParityInput], vocab) -> tuple[list[str], list[str]]:
    """Greedy CTC transcripts of the single-utterance manifest inputs that have a reference text."""
    from speechdistill.asr.decode import greedy_decode

    refs, hyps = [], []
    for inp in inputs:
        if inp.source != "manifest" or inp.wav.shape[0] != 1 or not inp.texts or inp.texts[0] is None:
            continue
        with torch.no_grad():
            log_probs, frame_lengths = runner(inp.wav, inp.lengths)
        hyps += greedy_decode(log_probs.float(), frame_lengths, vocab)
        refs.append(inp.texts[0])
    return refs, hyps


def int8_report(
    refs,
    int8: Runner,
    fp32: Runner,
    inputs: Sequence[ParityInput],
    time_axis: int,
    options: ParityOptions,
    vocab=None,
) -> ParityReport:
    """Tensor statistics always (never judged); WER judgement when a vocabulary and transcripts exist."""
    cases = compare(refs, int8, inputs, time_axis, options.rtol, options.atol)
    for c in cases:
        c.bound = float("nan")
        c.passed = c.frame_lengths_match  # tensors are reported, not judged, for int8
    if vocab is not None and options.manifest:
        decode_inputs = wer_inputs(options.manifest, options.wer_utterances, WER_MAX_SECONDS)
        texts, hyp8 = transcribe(int8, decode_inputs, vocab)
        if texts:
            from speechdistill.asr.metrics import wer

            _, hyp32 = transcribe(fp32, decode_inputs, vocab)
            w32, w8 = wer(texts, hyp32), wer(texts, hyp8)
            delta = w8 - w32
            ok = delta <= options.int8_max_wer_increase and all(c.frame_lengths_match for c in cases)
            report = summarize(
                "onnx-int8",
                "wer",
                cases,
                ok,
                {"fp32": w32, "int8": w8, "increase": delta, "utterances": len(texts)},
            )
            if not ok:
                report.message += (
                    f"; int8 WER {w8:.4f} is {delta:.4f} above fp32 {w32:.4f}, over the allowed "
                    f"{options.int8_max_wer_increase:.4f} by {delta - options.int8_max_wer_increase:.4f}"
                )
            return report
        log.info("int8: the parity manifest has no transcripts, so int8 is reported but not judged by WER")
    return summarize("onnx-int8", "report-only", cases, all(c.frame_lengths_match for c in cases))


# -- report file ----------------------------------------------------------------------------------


def parity_options_dict(options: ParityOptions) -> dict:
    return asdict(options)


def write_parity_json(
    out_dir: str | Path,
    metadata: dict[str, str],
    reports: dict[str, ParityReport],
    options: dict | None = None,
    name: str = PARITY_FILE,
) -> Path:
    """``parity.json`` (or ``name``): overall verdict, the export's metadata, the options used and every case."""
    from speechdistill.utils.io import atomic_write_json

    path = Path(out_dir) / name
    atomic_write_json(
        path,
        {
            "passed": all(r.passed for r in reports.values()),
            "summary": {k: r.message for k, r in reports.items()},
            "metadata": metadata,
            "options": options or {},
            "reports": {k: r.to_dict() for k, r in reports.items()},
        },
    )
    return path
