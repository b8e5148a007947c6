"""``speechdistill recipes [NAME]``: list shipped recipes or print one."""

from __future__ import annotations

import argparse

from speechdistill.cli.common import HelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the shipped YAML recipes, or print one",
                       description="List the shipped recipes, or print NAME's YAML (with its launch command).",
                       formatter_class=HelpFormatter)
    p.add_argument("name", nargs="?", help="recipe to print")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from speechdistill.config import list_recipes, recipe_text

    if args.name:
        print(recipe_text(args.name)[1])
        return 0
    for name in list_recipes():
        text = recipe_text(name)[1]
        first = next((ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")), "")
        print(f"{name:32s} {first}")
    return 0
