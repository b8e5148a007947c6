"""The one shape of every job command: ``speechdistill CMD [RECIPE] [key=value ...] [--flag ...]``.

A job reads a typed config (``run.*``) from a shipped YAML recipe (``recipes/CMD/NAME.yaml``) or a
YAML path, then the command's familiar flags (each an alias of one config key), then ``key=value``
overrides, and hands it to its driver.  Precedence: recipe < flags < overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from speechdistill.cli.common import OVERRIDES_HELP

_UNSET = object()
#: Every job command registered so far (name -> Job): tests run every shipped recipe through these.
JOBS: dict[str, Job] = {}


@dataclass(frozen=True)
class Flag:
    """A command-line option that sets one config key."""

    flag: str  # "--upstream"
    key: str  # "ctc.upstream"
    help: str
    const: Any = _UNSET  # a switch: given -> key = const (e.g. --unfreeze -> ctc.head.freeze_encoder=False)
    type: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    required: bool = False  # the job cannot run without it (the config's validate() says so too)


@dataclass(frozen=True)
class Job:
    name: str
    help: str
    description: str
    config_cls: type
    run: Callable[[Any, argparse.Namespace], int]  # (config, args) -> exit status
    flags: Sequence[Flag] = ()
    default_recipe: str | None = None  # used when no recipe is given
    resumable: bool = False  # a training job: adds --resume and --overwrite
    # Switches that pick a shipped recipe, e.g. {"--quick": ("quick", "smoke run ...")}.
    recipe_switches: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


def _default_of(job: Job, key: str) -> Any:
    from speechdistill.config import ConfigError, get_path, load_config

    try:
        cfg = load_config(job.config_cls, job.default_recipe, command=job.name) if job.default_recipe else None
    except ConfigError:  # a required field missing from the defaults: show the dataclass value instead
        cfg = None
    try:
        if cfg is not None:
            return get_path(cfg, key)
        node: Any = job.config_cls
        for part in key.split("."):
            f = {f.name: f for f in dataclasses.fields(node)}[part]
            node = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        return node
    except (AttributeError, KeyError, TypeError):
        return _UNSET


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _help(job: Job, f: Flag) -> str:
    if f.const is not _UNSET:
        return f"{f.help} [sets {f.key}={f.const!r}]"
    if f.required:
        return f"{f.help} [{f.key}; required]"
    default = _default_of(job, f.key)
    shown = "default: none" if default in ("", None, [], {}, _UNSET) else f"default {_shown(default)}"
    return f"{f.help} [{f.key}; {shown}]"


def register_job(sub: argparse._SubParsersAction, job: Job) -> argparse.ArgumentParser:
    from speechdistill.config import list_recipes

    JOBS[job.name] = job
    recipes = ", ".join(n for _, n in list_recipes(job.name)) or "none"
    p = sub.add_parser(
        job.name, help=job.help, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=job.description + (
            f"\nRecipes ({'default ' + job.default_recipe + '; ' if job.default_recipe else ''}shipped: {recipes}; "
            f"`speechdistill recipes {job.name}/NAME` prints one). Every config key can be set as key=value;\n"
            f"`--print-config` shows them all. Precedence: recipe < options < key=value."
        ),
    )
    p.add_argument(
        "recipe_and_overrides", nargs="*", metavar="[RECIPE] [key=value ...]",
        help="a shipped recipe name or a YAML file, then " + OVERRIDES_HELP,
    )
    opts = p.add_argument_group("options (each sets one config key)")
    for f in job.flags:
        kwargs: dict[str, Any] = {"dest": "flag__" + f.key.replace(".", "__"), "default": None, "help": _help(job, f)}
        if f.const is not _UNSET:
            kwargs.update(action="store_const", const=f.const)
        else:
            # argparse's default metavar would be the dest, FLAG__CTC__HEAD__LSTM_HIDDEN.
            metavar = f.metavar or (None if f.choices else f.key.rsplit(".", 1)[-1].upper())
            kwargs.update(type=f.type, choices=f.choices, metavar=metavar)
        opts.add_argument(f.flag, **kwargs)
    for switch, (recipe, text) in job.recipe_switches.items():
        p.add_argument(switch, dest="recipe_switch", action="store_const", const=recipe,
                       help=f"{text} [the same as giving the recipe {recipe}]")
    p.add_argument("--config", metavar="FILE", help="YAML recipe file (the same as giving it as RECIPE)")
    if job.resumable:
        p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its newest "
                       "intact checkpoint")
        p.add_argument("--overwrite", action="store_true", help="replace the run already in the output folder (its "
                       "checkpoints and logs go now, its model when this run writes one); without --resume or "
                       "--overwrite a used output folder is refused")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=lambda args: _run(job, args))
    return p


def split_recipe(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[RECIPE] key=value ...`` -> (recipe or None, overrides)."""
    from speechdistill.config import ConfigError

    recipe, overrides = None, []
    for i, item in enumerate(items):
        if "=" in item:
            overrides.append(item)
        elif i == 0:
            recipe = item
        else:
            raise ConfigError(
                f"{item!r} is neither the recipe (which comes first) nor a key=value override "
                "(e.g. optim.lr=1e-4)"
            )
    return recipe, overrides


def job_config(job: Job, args: argparse.Namespace):
    from speechdistill.config import ConfigError, load_config, set_path

    recipe, overrides = split_recipe(args.recipe_and_overrides)
    for given in (args.config, getattr(args, "recipe_switch", None)):
        if given:
            if recipe:
                raise ConfigError(f"give the recipe once: {recipe!r} and {given!r}")
            recipe = given
    flags: dict[str, Any] = {}
    for f in job.flags:
        value = getattr(args, "flag__" + f.key.replace(".", "__"))
        if value is not None:
            set_path(flags, f.key, value)
    return load_config(job.config_cls, recipe or job.default_recipe, overrides, command=job.name, flags=flags)


def _run(job: Job, args: argparse.Namespace) -> int:
    from speechdistill.config import to_dict

    cfg = job_config(job, args)
    if args.print_config:
        sys.stdout.write(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    return job.run(cfg, args)


def comma_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def comma_floats(text: str) -> list[float]:
    try:
        return [float(s) for s in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
