"""Typed dataclass configs from YAML recipes with ``key=value`` overrides.

Values are parsed with ``yaml.safe_load`` (never ``eval``), then checked against the dataclass field
types, so a typo in a key or a wrong type fails before any model is built.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from speechdistill.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} fits none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "2e-4" as a string; accept numeric strings for floats only.
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(value):
            # No setting means anything with NaN or infinity: lr=nan trains nothing, grad_clip=inf hides.
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", validate: bool = True) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    ``validate=False`` skips the top-level ``validate()`` (required fields a recipe leaves to the user);
    nested sections are always validated."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' under ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        default_factory = fields[name].default_factory
        if isinstance(value, dict) and dataclasses.is_dataclass(tp) and default_factory is not dataclasses.MISSING:
            # A partial section keeps this parent's defaults for it (e.g. a recipe's ``optim: {lr: ...}``
            # under a config whose optim default differs from OptimConfig's own defaults).
            value = deep_merge(to_dict(default_factory()), value)
        kwargs[name] = _coerce(value, tp, f"{where}.{name}" if where else name)
    obj = cls(**kwargs)
    return _run_validate(obj) if validate else obj


def validated(obj: T) -> T:
    """Check a config built in code (e.g. with ``dataclasses.replace``) as if it had been loaded: field
    types and choices, and every section's ``validate()``, nested ones included; raises ConfigError."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        from_dict(type(obj), data)
        return obj
    return _run_validate(obj)


def _run_validate(obj: T) -> T:
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as e:  # configs' validate() may raise ValueError; callers catch ConfigError
            raise ConfigError(str(e)) from None
    return obj


_RULE = re.compile(r"^(?:(>=|>|<=|<)\s*(-?[\d.e+-]+)|([\[(])\s*(-?[\d.e+-]+)\s*,\s*(-?[\d.e+-]+)\s*([\])]))$")


def in_range(value: float, rule: str) -> bool:
    """``rule``: ``">0"``, ``">=1"``, ``"<5"``, or an interval ``"[0,1)"``, ``"(0,1]"``..."""
    m = _RULE.match(rule.replace(" ", ""))
    if not m:
        raise ValueError(f"bad range rule {rule!r}")
    op, bound, lo_b, lo, hi, hi_b = m.groups()
    if op:
        b = float(bound)
        return {">=": value >= b, ">": value > b, "<=": value <= b, "<": value < b}[op]
    lo_ok = value >= float(lo) if lo_b == "[" else value > float(lo)
    hi_ok = value <= float(hi) if hi_b == "]" else value < float(hi)
    return lo_ok and hi_ok


def check_ranges(section: str, obj: Any, hints: dict[str, str] | None = None, **rules: str) -> None:
    """Raise ConfigError unless every named field of ``obj`` (a number, or each number of a list) lies in
    its range: ``check_ranges("optim", cfg, lr=">0", min_lr_ratio="[0,1]")``.  ``hints``: field -> what
    the value means or a typical value, added to the message."""
    for name, rule in rules.items():
        value = getattr(obj, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not (math.isfinite(v) and in_range(v, rule)):
                key = f"{section}.{name}" if section else name
                shown = f"{value!r}" if isinstance(value, (list, tuple)) else f"{v!r}"
                hint = f" ({hints[name]})" if hints and name in hints else ""
                raise ConfigError(f"{key}={shown}: must be {_rule_text(rule)}{hint}")


def _rule_text(rule: str) -> str:
    rule = rule.replace(" ", "")
    m = _RULE.match(rule)
    op, bound, lo_b, lo, hi, hi_b = m.groups()  # type: ignore[union-attr]
    if op:
        return {">=": ">= ", ">": "> ", "<=": "<= ", "<": "< "}[op] + bound
    return f"in {lo_b}{lo}, {hi}{hi_b}"


SEED_RULE = "[0,4294967295]"  # numpy and torch seeds are unsigned 32-bit


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["optim.lr=1e-4", "targets=[4,8]"]`` -> nested dict."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse the value as YAML ({str(e).splitlines()[0]})") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def split_top_level(spec: str) -> list[str]:
    """Split on commas outside brackets so ``conv_dim=[256,256]`` stays one item."""
    items, cur, depth = [], [], 0
    for ch in spec:
        if ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [s.strip() for s in items if s.strip()]


def parse_inline_mapping(spec: str, what: str = "mapping") -> dict[str, Any]:
    """``"a=1,b=[2,3]"`` -> ``{"a": 1, "b": [2, 3]}`` (the ``key=value`` override syntax, comma-joined)."""
    try:
        return parse_overrides(split_top_level(spec))
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


# ---------------------------------------------------------------------------------------------
# Shipped recipes: speechdistill/recipes/<command>/<name>.yaml

RECIPE_PACKAGE = "speechdistill.recipes"


def list_recipes(command: str | None = None) -> list[tuple[str, str]]:
    """(command, name) of every shipped recipe, or of one command's."""
    root = resources.files(RECIPE_PACKAGE)
    out = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir() or folder.name.startswith(("_", ".")) or (command and folder.name != command):
            continue
        out.extend((folder.name, p.name[: -len(".yaml")]) for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(out)


def _shipped(command: str, name: str):
    return resources.files(RECIPE_PACKAGE) / command / f"{name}.yaml"


def recipe_text(name_or_path: str, command: str | None = None) -> tuple[str, str]:
    """(source description, YAML text) for a shipped recipe of ``command`` (``NAME`` or
    ``COMMAND/NAME``), or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        try:
            return str(path), path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"recipe file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if "/" in name_or_path:
        command, name_or_path = name_or_path.split("/", 1)
    candidates = [command] if command else [c for c, n in list_recipes() if n == name_or_path]
    for c in candidates:
        res = _shipped(c, name_or_path)
        if res.is_file():
            return f"recipe {c}/{name_or_path}", res.read_text(encoding="utf-8")
    names = ", ".join(n for _, n in list_recipes(command)) if command else \
        ", ".join(f"{c}/{n}" for c, n in list_recipes())
    raise ConfigError(
        f"no {command + ' ' if command else ''}recipe named {name_or_path!r}; shipped: {names or 'none'} "
        "(or pass a path to a .yaml file)"
    )


def load_yaml_dict(name_or_path: str, command: str | None = None) -> dict[str, Any]:
    src, text = recipe_text(name_or_path, command)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: top level must be a mapping")
    return data


def load_config(
    cls: type[T], name_or_path: str | None, overrides: Iterable[str] = (), command: str | None = None,
    flags: dict[str, Any] | None = None, validate: bool = True,
) -> T:
    """Recipe (shipped name of ``command`` or a YAML path; None = the dataclass defaults), then
    ``flags`` (a nested dict from command-line options), then ``key=value`` overrides.

    ``validate=False``: a base to complete with ``dataclasses.replace`` (then call ``validated``)."""
    data = load_yaml_dict(name_or_path, command) if name_or_path else {}
    data = deep_merge(data, flags or {})
    data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data, validate=validate)


def get_path(obj: Any, dotted: str) -> Any:
    """``get_path(cfg, "optim.lr")`` on a config dataclass."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_path(d, "optim.lr", 1e-4)`` on a nested dict."""
    node = d
    *parents, last = dotted.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
