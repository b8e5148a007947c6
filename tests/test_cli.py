import argparse
from pathlib import Path

import pytest

from speechdistill.cli.main import build_parser, main
from speechdistill.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]


def _all_parsers(parser, prefix="speechdistill"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{prefix} {name}")


def test_every_option_of_every_command_has_help():
    names = []
    for name, parser in _all_parsers(build_parser()):
        names.append(name)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{name}: option {action.option_strings or action.dest} has no help text"
    for expected in ["speechdistill distill", "speechdistill data check", "speechdistill data synth",
                     "speechdistill finetune-ctc", "speechdistill evaluate", "speechdistill demo"]:
        assert expected in names


@pytest.mark.parametrize("argv", [["--help"], ["distill", "--help"], ["data", "check", "--help"]])
def test_help_exits_cleanly(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_bad_config_key_is_a_clean_error(capsys, caplog):
    assert main(["distill", "tiny_cpu", "optim.lrr=1", "--print-config"]) == 2
    assert "unknown config key(s) optim.lrr" in caplog.text


def test_missing_manifest_is_a_clean_error(caplog, tmp_path):
    rc = main(["distill", "tiny_cpu", f"data.train_manifest={tmp_path}/nope.jsonl", "teacher=tiny:hubert"])
    assert rc == 2 and "does not exist" in caplog.text and "speechdistill data synth" in caplog.text


def test_example_manifests_parse():
    utts = read_manifest(REPO / "manifests" / "example_librispeech.jsonl")
    assert len(utts) == 2 and utts[0].speaker == "1272" and utts[1].text.startswith("NOR IS")
