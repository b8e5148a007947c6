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
    "speechdistill.cli.compare_cmd",
    "speechdistill.cli.study_cmd",
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
    try:
        setup_logging(args.log_level)
    except ValueError:
        parser.error(f"--log-level {args.log_level!r}: choose DEBUG, INFO, WARNING or ERROR")
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a reader that went away (`| head`) shows up here, not at interpreter exit
    except BrokenPipeError:
        # Stop quietly, as Unix tools do; stdout goes to /dev/null so the exit-time flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _close_progress_bars()
        log.error("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns failures into messages
        _close_progress_bars()
        return report_failure(e)
    return int(rc or 0)


# Messages of failures that are the machine's, not the program's (raised by libraries as RuntimeError
# and the like, so not caught as OSError).
_ENVIRONMENT_WORDS = ("No space left on device", "File too large", "Disk quota exceeded", "Read-only file system")


def report_failure(e: BaseException) -> int:
    """Log ``e`` as one line and return the exit status.  Expected failures (``SpeechDistillError``,
    OSError, out of memory) print their message; anything else is a bug and says so.  The traceback
    is logged only at DEBUG level (``--log-level DEBUG``)."""
    from speechdistill.errors import SpeechDistillError, describe_os_error

    debug = log.isEnabledFor(logging.DEBUG)
    if isinstance(e, SpeechDistillError):
        log.error("%s", _one_line(str(e)), exc_info=debug)
        return e.exit_code
    if isinstance(e, OSError):
        log.error("%s", _one_line(describe_os_error(e)), exc_info=debug)
        return 2
    if isinstance(e, MemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(e) \
            or "CUDA out of memory" in str(e):
        log.error("out of memory (%s): use smaller batches (data.max_batch_seconds, --max-batch-seconds) or "
                  "shorter audio", _first_line(e) or type(e).__name__, exc_info=debug)
        return 2
    if any(w in str(e) for w in _ENVIRONMENT_WORDS):
        log.error("a write failed: %s", _first_line(e), exc_info=debug)
        return 2
    log.error(
        "internal error (a bug in speechdistill; please report it): %s: %s%s", type(e).__name__, _first_line(e),
        "" if debug else " [run again with --log-level DEBUG for the traceback]", exc_info=debug,
    )
    return 1


def _one_line(text: str) -> str:
    """Messages that quote a library's multi-line text (a YAML error with its context marks) on one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def _close_progress_bars() -> None:
    from speechdistill.utils.logging import close_progress_bars

    close_progress_bars()


if __name__ == "__main__":
    sys.exit(main())
