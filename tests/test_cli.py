import argparse
import re
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


def test_help_shows_each_default_once_and_no_empty_ones():
    """No `(default: None)`, no default stated twice, no internal dest names as metavars, in any --help."""
    import re

    for name, parser in _all_parsers(build_parser()):
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name
        assert "FLAG__" not in text, name
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS):
                continue
            shown = parser._get_formatter()._expand_help(action) if action.option_strings else action.help
            stated = re.findall(r"\(default|; default|default:", shown)  # ways a default value is announced
            assert len(stated) <= 1, f"{name} {action.option_strings}: {shown}"


def test_required_options_say_so_and_optional_empty_ones_do_not():
    helps = {n: p.format_help() for n, p in _all_parsers(build_parser())}
    assert re.search(r"--out DIR\s+output directory \(model files and parity.json\)\s+\[out;\s+required\]",
                     helps["speechdistill export"])
    assert re.search(r"\[parity.manifest;\s+default: none\]", helps["speechdistill export"])


def test_export_help_examples_use_paths_distill_and_finetune_write():
    from speechdistill.config import load_config
    from speechdistill.run.distill import DistillConfig
    from speechdistill.run.finetune import FinetuneConfig

    written = {load_config(DistillConfig, "tiny_cpu", command="distill", validate=False).out_dir + "/model",
               load_config(FinetuneConfig, None, command="finetune-ctc", validate=False).out_dir + "/model",
               load_config(FinetuneConfig, "hf_ctc", command="finetune-ctc", validate=False).out_dir + "/model"}
    text = dict(_all_parsers(build_parser()))["speechdistill export"].description
    models = set(re.findall(r"speechdistill export --model (\S+)", text))
    assert models and models <= written, models - written


def test_a_closed_pipe_is_not_a_traceback():
    """`speechdistill recipes tiny_cpu | head -3`: the reader leaves before the output is written."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "speechdistill", "recipes", "tiny_cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    proc.stdout.close()  # like `head` exiting: every write now fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
