"""The README's command lines run as written, on a tiny LibriSpeech-shaped tree and a tiny teacher.

Placeholders of the README (``/data/LibriSpeech``, ``/models/hubert-base-ls960``) are replaced by the
tiny stand-ins, and each command gets a few extra options so it finishes in seconds (fewer steps,
targets that fit a 4-layer teacher); the README's own arguments are kept unchanged.
"""

import re
import shlex
from pathlib import Path

import pytest
from conftest import tone_utterance

from speechdistill.cli.main import main
from speechdistill.data.audio import write_audio
from speechdistill.models.factory import tiny_encoder

README = Path(__file__).resolve().parents[1] / "README.md"

SHORTEN = {
    "distill": ["gendistiller.targets=[2,4]", "gendistiller.decoder_heads=4", "gendistiller.decoder_ffn_dim=32",
                "train.steps=2", "data.crop_seconds=0.5", "data.max_batch_seconds=8", "data.num_workers=0",
                "data.max_dev_batches=1", "train.val_every=0", "train.save_every=0", "train.progress=false"],
    "finetune-ctc": ["--steps", "2", "--max-batch-seconds", "8", "--lstm-layers", "1", "train.progress=false"],
    "prune": ["--num-calib", "4", "--sketch-rows", "0"],
    "export": ["--parity-lengths", "0.7,1.3", "--threads", "1", "--speed-seconds", "1"],
}


def readme_commands() -> list[list[str]]:
    """``speechdistill ...`` lines of the README's "Using it" block (continuations joined)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Using it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
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
    for expected in ("data", "recipes", "distill", "finetune-ctc", "evaluate", "prune", "export"):
        assert expected in names, f"the README no longer shows `speechdistill {expected}`"
    _librispeech(tmp_path / "data")
    # Transformer-heavy like the real one, so STAT can reach the README's 50 % MAC budget.
    tiny_encoder("hubert", num_layers=4, seed=3, hidden_size=96, intermediate_size=384, conv_dim=8).save_pretrained(
        tmp_path / "models" / "hubert-base-ls960")
    monkeypatch.chdir(tmp_path)
    previous = None
    for argv in cmds:
        if argv[0].startswith("-"):  # speechdistill --help
            with pytest.raises(SystemExit) as e:
                main(argv)
            assert e.value.code == 0
            continue
        if "..." in argv:  # "the same command again, with --resume": repeat the previous one
            assert previous is not None and argv[0] == previous[0]
            argv = [*previous, *[a for a in argv if a.startswith("--")]]
        else:
            argv = [a.replace("/data/LibriSpeech", str(tmp_path / "data"))
                    .replace("/models/", str(tmp_path / "models") + "/") for a in argv]
        previous = argv
        full = [*argv, *SHORTEN.get(argv[0], [])]
        assert main(full) == 0, f"README command failed: speechdistill {' '.join(argv)}"
    assert (tmp_path / "runs" / "gen_onnx" / "model.int8.onnx").is_file()
    assert (tmp_path / "runs" / "pruned" / "prune_report.json").is_file()
    import json

    onnx_eval = json.loads((tmp_path / "runs" / "gen_asr_onnx" / "test" / "report.json").read_text())
    assert onnx_eval["backend"] == "onnxruntime" and onnx_eval["precision"] == "int8"
