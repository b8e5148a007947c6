#!/usr/bin/env python
"""Quality benchmark: the demo pipeline at a configurable size, plus an optional real-speech check.

  python bench/quality.py --out bench/out/quality --hours 1 --distill-steps 1000 --ctc-steps 800
  python bench/quality.py ... --fsdd ../shared/data/fsdd   # + FSDD: real recorded digits, held-out speakers

The synthetic part is exactly `speechdistill demo` with larger settings (report.md/json, plot in --out).
With --fsdd, a CTC head is trained on each frozen encoder (teacher and both students) on the FSDD
recordings of all speakers but the held-out ones and evaluated on the held-out speakers (real human
speech, 8 kHz resampled to 16 kHz); the table goes to OUT/fsdd.md and OUT/fsdd.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

DIGITS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]


def fsdd_manifests(root: Path, out: Path, test_speakers: list[str], dev_speakers: list[str]) -> dict[str, str]:
    import soundfile as sf

    from speechdistill.data.manifest import Utterance, write_manifest

    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    for wav in sorted((root / "recordings").glob("*.wav")):
        digit, speaker, _take = wav.stem.split("_")
        info = sf.info(str(wav))
        split = "test" if speaker in test_speakers else "dev" if speaker in dev_speakers else "train"
        splits[split].append(Utterance(wav.stem, str(wav.resolve()), info.frames, info.samplerate, DIGITS[int(digit)], speaker))
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, utts in splits.items():
        paths[split] = str(out / f"fsdd_{split}.jsonl")
        write_manifest(paths[split], utts)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/quality", help="output folder")
    ap.add_argument("--hours", type=float, default=1.0, help="hours of synthetic digits")
    ap.add_argument("--distill-steps", type=int, default=1000, help="steps per student")
    ap.add_argument("--ctc-steps", type=int, default=800, help="steps per CTC head (synthetic)")
    ap.add_argument("--teacher", default="builtin:reference", help="teacher (builtin:reference, a directory)")
    ap.add_argument("--seed", type=int, default=0, help="seed")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--fsdd", help="FSDD folder (recordings/*.wav) for the real-speech check")
    ap.add_argument("--fsdd-test-speakers", default="theo", help="held-out FSDD speakers (comma-separated)")
    ap.add_argument("--fsdd-dev-speakers", default="nicolas", help="FSDD dev speakers (comma-separated)")
    ap.add_argument("--fsdd-ctc-steps", type=int, default=400, help="steps per CTC head on FSDD")
    ap.add_argument("--skip-synthetic", action="store_true", help="reuse OUT's distilled students; only run --fsdd")
    args = ap.parse_args()

    from speechdistill.utils.logging import setup_logging

    setup_logging("INFO")  # before transformers is imported: it reads its progress-bar switch then
    from speechdistill.models.builtin import resolve_model_path
    from speechdistill.run.demo import DemoConfig, _finetune, run_demo

    log = logging.getLogger("bench.quality")
    out = Path(args.out)
    cfg = DemoConfig(out=str(out), hours=args.hours, seed=args.seed, teacher=args.teacher,
                     distill_steps=args.distill_steps, ctc_steps=args.ctc_steps, threads=args.threads)
    if not args.skip_synthetic:
        run_demo(cfg)
        print((out / "report.md").read_text())
    if not args.fsdd:
        return

    from speechdistill.asr.evaluate import evaluate_model
    from speechdistill.models.load import load_encoder
    from speechdistill.report.demo_report import markdown_table
    from speechdistill.report.stats import count_macs, count_parameters

    manifests = fsdd_manifests(Path(args.fsdd), out / "fsdd", args.fsdd_test_speakers.split(","),
                               args.fsdd_dev_speakers.split(","))
    fcfg = replace(cfg, ctc_steps=args.fsdd_ctc_steps)
    encoders = {"teacher": resolve_model_path(args.teacher), "gendistiller": str(out / "gendistiller" / "model"),
                "distilhubert": str(out / "distilhubert" / "model")}
    rows = []
    for name, enc_dir in encoders.items():
        log.info("FSDD: CTC head on frozen %s", name)
        model_dir = _finetune(fcfg, enc_dir, manifests, out / "fsdd" / f"ctc_{name}")
        rep = evaluate_model(model_dir, manifests["test"], out / "fsdd" / f"eval_{name}", threads=args.threads or None)
        enc = load_encoder(enc_dir)
        rows.append({"model": name, "how": "frozen + CTC head on FSDD train speakers",
                     "encoder_params": count_parameters(enc), "macs_per_second": count_macs(enc, 1.0),
                     "wer": rep["wer"], "cer": rep["cer"], "rtf": rep["rtf"], "threads": rep.get("threads"),
                     "num_utterances": rep["num_utterances"]})
    md = (f"FSDD real speech: held-out speakers {args.fsdd_test_speakers} ({rows[0]['num_utterances']} utterances), "
          f"CTC heads trained {args.fsdd_ctc_steps} steps on the other speakers; WER = digit error rate.\n\n"
          + markdown_table(rows))
    print(md)
    (out / "fsdd.md").write_text(md + "\n")
    (out / "fsdd.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
