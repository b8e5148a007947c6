"""``speechdistill recipes [NAME]``: list shipped recipes or print one."""

from __future__ import annotations

import argparse
import sys

from speechdistill.cli.common import HelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the shipped YAML recipes, or print one",
                       description="List the shipped recipes of every command (or of COMMAND), or print one "
                       "recipe's YAML (with its launch command): NAME or COMMAND/NAME.",
                       formatter_class=HelpFormatter)
    p.add_argument("name", nargs="?", help="COMMAND, or the recipe to print: NAME or COMMAND/NAME")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from speechdistill.config import list_recipes, recipe_text

    commands = {c for c, _ in list_recipes()}
    if args.name and args.name not in commands:
        sys.stdout.write(recipe_text(args.name)[1])
        return 0
    for command, name in list_recipes(args.name):
        text = recipe_text(name, command)[1]
        first = next((ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")), "")
        first = first.split(":", 1)[1].strip() if first.startswith(name + ":") else first
        sys.stdout.write(f"{command + '/' + name:40s} {first}\n")
    return 0
