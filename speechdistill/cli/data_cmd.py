"""``speechdistill data ...``: build, convert, merge, check and synthesise manifests."""

from __future__ import annotations

import argparse
import logging

from speechdistill.cli.common import HelpFormatter

log = logging.getLogger(__name__)

BAD_HELP = "what to do with bad audio or manifest lines: 'error' stops at the first, 'skip' reports and continues"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build, convert, merge, check and synthesise manifests",
                       description="Manifest tools. Native format: JSONL with id, path, num_samples, "
                       "sample_rate, optional text, speaker and label (see manifests/README.md).",
                       formatter_class=HelpFormatter)
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    q = dsub.add_parser("librispeech", help="manifests from a LibriSpeech tree", formatter_class=HelpFormatter,
                        description="Scan ROOT/SUBSET/SPEAKER/CHAPTER/*.flac with *.trans.txt; writes OUT/SUBSET.jsonl.")
    q.add_argument("--root", required=True, help="folder holding the subsets (or LibriSpeech/ itself)")
    q.add_argument("--subsets", required=True, help="comma-separated, e.g. train-clean-100,dev-clean")
    q.add_argument("--out", required=True, help="output folder for the manifests")
    q.add_argument("--on-bad-audio", choices=["error", "skip"], default="error", help=BAD_HELP)
    q.set_defaults(func=run_librispeech)

    q = dsub.add_parser("folder", help="manifest from any folder of audio", formatter_class=HelpFormatter,
                        description="Every audio file under ROOT; transcripts from sibling .txt/.lab files or "
                        "--transcripts; speaker = first sub-folder.")
    q.add_argument("--root", required=True, help="folder to scan recursively")
    q.add_argument("--out", required=True, help="output manifest (.jsonl)")
    q.add_argument("--transcripts", help="optional file of 'ID TEXT' lines (ID = file name without extension)")
    q.add_argument("--on-bad-audio", choices=["error", "skip"], default="error", help=BAD_HELP)
    q.set_defaults(func=run_folder)

    q = dsub.add_parser("import-fairseq", help="fairseq .tsv (+ .wrd) -> manifest", formatter_class=HelpFormatter)
    q.add_argument("--tsv", required=True, help="fairseq manifest: root line, then PATH<TAB>NUM_SAMPLES lines")
    q.add_argument("--wrd", help="optional word transcripts, one line per audio line")
    q.add_argument("--out", required=True, help="output manifest (.jsonl)")
    q.add_argument("--on-bad-audio", choices=["error", "skip"], default="error", help=BAD_HELP)
    q.set_defaults(func=run_import_fairseq)

    q = dsub.add_parser("export-fairseq", help="manifest -> fairseq .tsv (+ .wrd, .ltr)", formatter_class=HelpFormatter)
    q.add_argument("manifest", help="input manifest (.jsonl)")
    q.add_argument("--tsv", required=True, help="output .tsv")
    q.add_argument("--wrd", help="output word transcripts")
    q.add_argument("--ltr", help="output letter transcripts ('|' between words)")
    q.set_defaults(func=run_export_fairseq)


    q = dsub.add_parser("check", help="validate a manifest and every file in it", formatter_class=HelpFormatter,
                        description="Reads every line and decodes every file (its length must match the "
                        "manifest's num_samples); prints hours, utterances, sample rates, min/max duration, and every "
                        "bad file with its reason. Exit status 1 if anything is bad (unless --on-bad-audio skip) or "
                        "if no utterance is usable.")
    q.add_argument("manifest", help="manifest to check (.jsonl)")
    q.add_argument("--on-bad-audio", choices=["error", "skip"], default="error",
                   help="'error': exit 1 if any file is bad; 'skip': report the count and exit 0 (if any file is good)")
    q.add_argument("--clean-out", help="write the good lines to this manifest")
    q.add_argument("--no-decode", action="store_true", help="check headers and manifest only (faster)")
    q.add_argument("--json", help="also write the report as JSON here")
    q.set_defaults(func=run_check)

    q = dsub.add_parser(
        "labelled-folder", help="KS/SID manifests from a folder of labelled recordings (e.g. FSDD)",
        formatter_class=HelpFormatter,
        description="Label, speaker and take from each file's path (relative to ROOT) by --pattern. Writes "
        "OUT/speakers/{train,dev,test}.jsonl (speaker-disjoint: keyword spotting on new voices), "
        "OUT/takes/{train,dev,test}.jsonl (held-out takes of the same speakers: speaker identification, FSDD's "
        "official split) and OUT/upstream/{train,dev}.jsonl (in no test part of either: safe for training an "
        "upstream), plus OUT/labelled_info.json.\n\n"
        "  speechdistill data labelled-folder --root fsdd/recordings --out corpora/fsdd --text-map digits \\\n"
        "      --test-speakers theo --dev-speakers nicolas")
    q.add_argument("--root", required=True, help="folder of recordings (searched recursively)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--pattern", default="{label}_{speaker}_{take}.wav",
                   help="path pattern relative to ROOT with {label}, {speaker}, optional {take} and {_} (ignored), "
                   "e.g. '{label}/{speaker}_nohash_{take}.wav' for Speech Commands")
    q.add_argument("--test-speakers", default="", help="comma-separated test speakers (empty: the first "
                   "--num-test-speakers in sorted order)")
    q.add_argument("--dev-speakers", default="", help="comma-separated dev speakers (empty: the next --num-dev-speakers)")
    q.add_argument("--num-test-speakers", type=int, default=1, help="test speakers when --test-speakers is not given")
    q.add_argument("--num-dev-speakers", type=int, default=1, help="dev speakers when --dev-speakers is not given")
    q.add_argument("--test-takes", default="0,1,2,3,4", help="takes held out for test (FSDD convention: 0-4)")
    q.add_argument("--dev-takes", default="5,6,7,8,9", help="takes held out for dev")
    q.add_argument("--text-map", default="", help="transcripts from labels for CTC: a preset (digits: 0->ZERO ...) "
                   "or LABEL=TEXT,...; default: no text")
    q.add_argument("--on-bad-audio", choices=["error", "skip"], default="error", help=BAD_HELP)
    q.set_defaults(func=run_labelled_folder)

    q = dsub.add_parser("merge", help="concatenate manifests into one (e.g. LibriSpeech 960 h), optionally repeating some",
                        formatter_class=HelpFormatter,
                        description="Concatenate manifests; audio paths are rewritten relative to --out's folder, "
                        "and an utterance id found in two inputs is an error. Extra copies of a repeated manifest get "
                        "ids ID#r1, ID#r2, ...\n\n"
                        "  speechdistill data merge manifests/train-clean-100.jsonl manifests/train-clean-360.jsonl "
                        "manifests/train-other-500.jsonl --out manifests/ls960.jsonl\n"
                        "  speechdistill data merge --out train.jsonl digits/train.jsonl fsdd/upstream/train.jsonl --repeat 1,3")
    q.add_argument("manifests", nargs="+", help="input manifests")
    q.add_argument("--out", required=True, help="output manifest (.jsonl)")
    q.add_argument("--repeat", default="", help="comma-separated copies of each input (empty: 1 each)")
    q.set_defaults(func=run_merge)

    q = dsub.add_parser("predecode", help="decode a corpus once into 16 kHz WAV shards (fast training reads)",
                        formatter_class=HelpFormatter,
                        description="Decodes (and resamples) every utterance once into OUT/shards/*.wav, many "
                        "utterances per shard, and writes OUT/<manifest name> with the same lines plus an 'offset' "
                        "into the shard. Training then reads only each crop's samples instead of decoding FLAC "
                        "every epoch.")
    q.add_argument("manifest", help="input manifest (.jsonl)")
    q.add_argument("--out", required=True, help="output folder (shards/ and the new manifest)")
    q.add_argument("--shard-seconds", type=float, default=3600.0, help="audio per shard (1 h of PCM16 = 115 MB)")
    q.add_argument("--subtype", choices=["PCM_16", "FLOAT"], default="PCM_16",
                   help="sample format: PCM_16 is lossless for 16-bit sources, FLOAT keeps float32 (2x size)")
    q.add_argument("--workers", type=int, default=0, help="decoding processes (0 = this one)")
    q.add_argument("--on-bad-audio", choices=["error", "skip"], default="error", help=BAD_HELP)
    q.set_defaults(func=run_predecode)

    from speechdistill.cli import synth_cmd

    synth_cmd.register(dsub)


def _report_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        log.warning("skipped %d bad file(s):", len(skipped))
        for path, why in skipped:
            log.warning("  %s: %s", path, why)


def run_librispeech(args) -> int:
    from speechdistill.data.scan import scan_librispeech

    res = scan_librispeech(args.root, [s.strip() for s in args.subsets.split(",") if s.strip()], args.out,
                           args.on_bad_audio)
    for subset, (path, n, skipped) in res.items():
        print(f"{subset}: {n} utterances -> {path}")
        _report_skipped(skipped)
    return 0


def run_folder(args) -> int:
    from speechdistill.data.scan import scan_folder

    n, skipped = scan_folder(args.root, args.out, args.on_bad_audio, args.transcripts)
    print(f"{n} utterances -> {args.out}")
    _report_skipped(skipped)
    return 0


def run_import_fairseq(args) -> int:
    from speechdistill.data.scan import import_fairseq

    n = import_fairseq(args.tsv, args.out, args.wrd, args.on_bad_audio)
    print(f"{n} utterances -> {args.out}")
    return 0


def run_export_fairseq(args) -> int:
    from speechdistill.data.scan import export_fairseq

    n = export_fairseq(args.manifest, args.tsv, args.wrd, args.ltr)
    print(f"{n} utterances -> {args.tsv}")
    return 0


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def run_labelled_folder(args) -> int:
    import json

    from speechdistill.data.labelled import LabelledFolderConfig, parse_text_map, write_labelled_manifests

    cfg = LabelledFolderConfig(
        root=args.root, out=args.out, pattern=args.pattern, test_speakers=_names(args.test_speakers),
        dev_speakers=_names(args.dev_speakers), num_test_speakers=args.num_test_speakers,
        num_dev_speakers=args.num_dev_speakers, test_takes=_names(args.test_takes), dev_takes=_names(args.dev_takes),
        text_map=parse_text_map(args.text_map), on_bad_audio=args.on_bad_audio,
    )
    info = write_labelled_manifests(cfg)
    print(json.dumps({k: info[k] for k in ("test_speakers", "dev_speakers", "num_utterances", "manifests")}, indent=2))
    return 0


def run_merge(args) -> int:
    from speechdistill.data.errors import BadInputError
    from speechdistill.data.manifest import merge_manifests

    try:
        repeats = [int(x) for x in _names(args.repeat)] or None
    except ValueError:
        raise BadInputError(f"--repeat {args.repeat!r}: expected comma-separated integers") from None
    n = merge_manifests(args.manifests, args.out, repeats)
    print(f"{n} utterances -> {args.out}")


def run_predecode(args) -> int:
    from speechdistill.data.predecode import predecode

    res = predecode(args.manifest, args.out, args.shard_seconds, args.subtype, args.on_bad_audio, args.workers)
    print(f"{res.utterances} utterances, {res.seconds / 3600:.3f} h -> {len(res.shards)} shard(s), "
          f"{res.bytes / 2**20:.1f} MiB; manifest {res.manifest}")
    _report_skipped(res.skipped)
    return 0


def run_check(args) -> int:
    from speechdistill.data.check import check_manifest
    from speechdistill.data.manifest import read_manifest, write_manifest

    rep = check_manifest(args.manifest, decode=not args.no_decode)
    rates = ", ".join(f"{sr} Hz x{n}" for sr, n in sorted(rep.sample_rates.items())) or "-"
    print(f"manifest      {rep.manifest}")
    print(f"utterances    {rep.utterances} ok, {len(rep.bad)} bad")
    print(f"hours         {rep.hours:.3f}")
    print(f"sample rates  {rates}")
    if rep.utterances:
        print(f"duration      min {rep.min_seconds:.2f} s, max {rep.max_seconds:.2f} s")
    print(f"with text     {rep.with_text}")
    print(f"speakers      {len(rep.speakers)}")
    for where, problem in rep.bad:
        print(f"BAD  {where}: {problem}")
    if args.json:
        from speechdistill.utils.io import atomic_write_json

        atomic_write_json(args.json, rep.to_dict())
    if args.clean_out:
        bad_paths = {w for w, _ in rep.bad}
        good = [u for u in read_manifest(args.manifest, on_bad_line="skip") if u.path not in bad_paths]
        write_manifest(args.clean_out, good)
        print(f"wrote {len(good)} good utterances to {args.clean_out}")
    if rep.bad:
        if args.on_bad_audio == "skip" and rep.utterances:
            print(f"skipped {len(rep.bad)} bad utterance(s)")
            return 0
        return 1
    if not rep.utterances:
        log.error("%s: the manifest holds no utterances", args.manifest)
        return 1
    return 0


