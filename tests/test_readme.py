"""The README's command lines run as written, on a tiny LibriSpeech-shaped tree and a tiny teacher.

Placeholders of the README (``/data/LibriSpeech``, ``/models/hubert-base-ls960``) are replaced by the
tiny stand-ins, and each command gets a few extra options so it finishes in seconds (fewer steps,
targets that fit a 4-layer teacher); the README's own arguments are kept unchanged.
"""

import re
import shlex
from pathlib import Path

import pytest
from conftest import make_labelled_recordings, tone_utterance

from speechdistill.cli.main import main
from speechdistill.data.audio import write_audio
from speechdistill.data.manifest import read_manifest, write_manifest
from speechdistill.models.factory import tiny_encoder

README = Path(__file__).resolve().parents[1] / "README.md"

SHORTEN = {
    "distill": ["gendistiller.targets=[2,4]", "gendistiller.decoder_heads=4", "gendistiller.decoder_ffn_dim=32",
                "train.steps=2", "data.crop_seconds=0.5", "data.max_batch_seconds=8", "data.num_workers=0",
                "data.max_dev_batches=1", "train.val_every=0", "train.save_every=0", "train.progress=false"],
    "finetune-ctc": ["--steps", "2", "--max-batch-seconds", "8", "--lstm-layers", "1", "train.progress=false"],
    "prune": ["--num-calib", "4", "--sketch-rows", "0"],
    "export": ["--parity-lengths", "0.7,1.3", "--threads", "1", "--speed-seconds", "1"],
    "synth": ["--hours", "0.005", "--test-utterances", "6", "--test-speakers", "3", "--num-workers", "1",
              "--no-progress"],
    "compare": ["seeds=1", "asr.max_steps=2", "asr.val_every=1", "utterance.max_steps=2", "utterance.val_every=1",
                "cost.seconds=1.0", "cost.repeats=1", "cost.isolate=false", "stats.bootstrap=100"],
}


def readme_commands() -> list[list[str]]:
    """``speechdistill ...`` lines of the README's "Using it" and "Comparing encoders" blocks (continuations
    joined), in order."""
    text = README.read_text(encoding="utf-8")
    block = "\n".join(text.split(section, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
                      for section in ("## Using it", "## Comparing encoders"))
    block = re.sub(r"\\\s*\n\s*", " ", block)
    cmds = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("speechdistill "):
            cmds.append(shlex.split(line)[1:])
    return cmds


def _librispeech(root: Path) -> None:
    for subset, speakers in {"train-clean-100": ["19", "26"], "dev-clean": ["84"], "test-clean": ["61"]}.items():
        for spk in speakers:
            d = root / "LibriSpeech" / subset / spk / "100"
            d.mkdir(parents=True)
            lines = []
            for k, text in enumerate(["CAB BAD", "FACE", "BEAD FED", "DEAF CAFE"]):
                uid = f"{spk}-100-{k:04d}"
                write_audio(str(d / f"{uid}.flac"), tone_utterance(text, seed=k + int(spk)))
                lines.append(f"{uid} {text}")
            (d / f"{spk}-100.trans.txt").write_text("\n".join(lines) + "\n")


def test_readme_commands_run_as_written(tmp_path, monkeypatch):
    cmds = readme_commands()
    names = [c[0] for c in cmds]
    for expected in ("data", "recipes", "distill", "finetune-ctc", "evaluate", "prune", "export", "compare"):
        assert expected in names, f"the README no longer shows `speechdistill {expected}`"
    _librispeech(tmp_path / "data")
    for name in ("hubert-base-ls960", "teacher"):
        # Transformer-heavy like the real one, so STAT can reach the README's 50 % MAC budget.
        tiny_encoder("hubert", num_layers=4, seed=3, hidden_size=96, intermediate_size=384, conv_dim=8) \
            .save_pretrained(tmp_path / "models" / name)
    make_labelled_recordings(tmp_path / "fsdd")
    monkeypatch.chdir(tmp_path)
    previous = None
    for argv in cmds:
        if argv[0].startswith("-"):  # speechdistill --help
            with pytest.raises(SystemExit) as e:
                main(argv)
            assert e.value.code == 0
            continue
        if "..." in argv:  # "the same command again, with these changes": the previous one's arguments
            assert previous is not None and argv[0] == previous[0]
            argv = _repeat(previous, argv)
        else:
            argv = [a.replace("/data/LibriSpeech", str(tmp_path / "data"))
                    .replace("/models/", str(tmp_path / "models") + "/") for a in argv]
        previous = argv
        if argv[0] == "compare" and not (tmp_path / "clips.jsonl").is_file():
            # The README's "clips.jsonl": real unlabelled speech; here the dev utterances, paths absolute.
            write_manifest(tmp_path / "clips.jsonl", read_manifest(tmp_path / "manifests" / "dev-clean.jsonl"))
        extra = SHORTEN.get(argv[1] if argv[0] == "data" else argv[0], [])
        assert main([*argv, *extra]) == 0, f"README command failed: speechdistill {' '.join(argv)}"
    assert (tmp_path / "runs" / "gen_onnx" / "model.int8.onnx").is_file()
    assert (tmp_path / "runs" / "pruned" / "prune_report.json").is_file()
    assert (tmp_path / "runs" / "cmp" / "compare.json").is_file()
    import json

    onnx_eval = json.loads((tmp_path / "runs" / "gen_asr_onnx" / "test" / "report.json").read_text())
    assert onnx_eval["backend"] == "onnxruntime" and onnx_eval["precision"] == "int8"


def _repeat(previous: list[str], line: list[str]) -> list[str]:
    """``CMD [RECIPE] ... --flag value``: the previous command's arguments, then this line's (a flag whose
    value is ``...`` keeps the previous value; later flags override earlier ones)."""
    cmd, rest = line[0], line[1:]
    recipe = [rest.pop(0)] if rest and not rest[0].startswith("-") and rest[0] != "..." else []
    prev_rest = previous[1:]
    if recipe and prev_rest and not prev_rest[0].startswith("-") and "=" not in prev_rest[0]:
        prev_rest = prev_rest[1:]  # this line names its own recipe
    mine, i = [], 0
    while i < len(rest):
        if rest[i] == "...":
            i += 1
        elif rest[i].startswith("--") and i + 1 < len(rest) and rest[i + 1] == "...":
            i += 2
        else:
            mine.append(rest[i])
            i += 1
    return [cmd, *recipe, *prev_rest, *mine]


def test_distill_help_example_runs_as_written(tmp_path, monkeypatch):
    """`speechdistill distill --help`'s single-process example, line by line (training cut to 2 steps)."""
    pytest.importorskip("espeakng_loader")
    from speechdistill.cli.distill_cmd import DESCRIPTION

    block = DESCRIPTION.split("Single process", 1)[1].split("Several GPUs", 1)[0]
    cmds = [shlex.split(ln.split("#", 1)[0])[1:] for ln in block.splitlines() if ln.strip().startswith("speechdistill ")]
    assert [c[0] for c in cmds] == ["data", "distill", "distill"]
    monkeypatch.chdir(tmp_path)
    for argv in cmds:
        extra = SHORTEN["distill"] + ["teacher=tiny:hubert"] if argv[0] == "distill" else ["--hours", "0.01"]
        if argv[0] == "data":  # the example's 0.2 h, cut to 0.01 h: keep the folder the recipe reads
            argv = [a for i, a in enumerate(argv) if a != "--hours" and (i == 0 or argv[i - 1] != "--hours")]
        assert main([*argv, *extra]) == 0, f"speechdistill {' '.join(argv)}"
    assert (tmp_path / "runs" / "tiny_cpu" / "model" / "config.json").is_file()
