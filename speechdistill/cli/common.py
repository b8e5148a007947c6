"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse

OVERRIDES_HELP = (
    "recipe overrides as key=value, dotted for nested keys, values parsed as YAML "
    "(e.g. optim.lr=1e-4 train.steps=500 distilhubert.targets=[4,8,12])"
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` only where it says something: not for required options, positionals,
    switches, options without a default, or help that already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.required
            or not action.option_strings
            or action.default is None
            or action.default is False  # `in (None, False)` would also hide a default of 0
            or action.default == argparse.SUPPRESS
            or isinstance(action, argparse._HelpAction)
        ):
            return text
        return text + " (default: %(default)s)"
