"""``speechdistill`` command line. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from speechdistill import __version__

# Modules that contribute subcommands, in --help order.
COMMAND_MODULES = [
    "speechdistill.cli.data_cmd",
    "speechdistill.cli.units_cmd",
    "speechdistill.cli.distill_cmd",
    "speechdistill.cli.finetune_cmd",
    "speechdistill.cli.evaluate_cmd",
    "speechdistill.cli.prune_cmd",
    "speechdistill.cli.export_cmd",
    "speechdistill.cli.demo_cmd",
    "speechdistill.cli.recipes_cmd",
]

log = logging.getLogger("speechdistill")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechdistill",
        description="Distill, prune, evaluate and export self-supervised speech encoders (HuBERT, WavLM).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"speechdistill {__version__}")
    parser.add_argument(
        "--log-level", default=os.environ.get("SPEECHDISTILL_LOG", "INFO"),
        help="logging level: DEBUG, INFO, WARNING, ERROR (default: INFO or $SPEECHDISTILL_LOG)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from speechdistill.utils.logging import setup_logging

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse fills a job's [RECIPE] [key=value ...] positionals from one run of arguments only, so
        # overrides given after an option (`distill tiny_cpu --resume train.steps=9`) arrive here.
        if hasattr(args, "recipe_and_overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.recipe_and_overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level)
    from speechdistill.config import ConfigError
    from speechdistill.data.errors import BadInputError
    from speechdistill.models.errors import ModelLoadError

    try:
        rc = args.func(args)
    except (ConfigError, BadInputError, ModelLoadError) as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
