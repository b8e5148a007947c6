"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse

OVERRIDES_HELP = (
    "recipe overrides as key=value, dotted for nested keys, values parsed as YAML "
    "(e.g. optim.lr=1e-4 train.steps=500 distilhubert.targets=[4,8,12])"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass
