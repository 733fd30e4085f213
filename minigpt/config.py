"""Config dataclasses <-> command-line flags and config files.

Every knob lives in exactly one dataclass field; this module turns fields into flags named as the field with
dashes (`n_layer` -> `--n-layer`), with the help text from `field(metadata={"help": ...})`. Precedence, lowest
first: the dataclass defaults < a parent checkpoint's values (later stages inherit the model shape) < a
`--config` file (TOML or JSON, flat keys or one table per section; cli/args.py makes its keys the defaults of
the command's own flags, so any flag can come from the file and a misspelt key is refused) < flags typed on the
command line.
Validation lives in each dataclass's `__post_init__`, which raises `MinigptError` naming the flag to change.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from .common import MinigptError

T = TypeVar("T")


def option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with help text: `lr: float = option(1e-3, "peak learning rate")`."""
    return dataclasses.field(default=default, metadata={"help": help, **extra})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Unwrap Optional[X] / X | None -> (X, True)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parser_for(tp: Any, optional: bool):
    if typing.get_origin(tp) is Literal:
        return str
    base = {int: int, float: float, str: str}.get(tp, str)
    if not optional:
        return base
    return lambda s: None if s.lower() in ("none", "null", "") else base(s)


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                       exclude: tuple[str, ...] = (), shown: dict[str, Any] | None = None) -> None:
    """Add one flag per field of `cls`. Defaults are SUPPRESSed so we can tell what the user typed. `shown`
    replaces a field's default in the help when the command starts from other values (a preset, a stage)."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init or f.metadata.get("cli") is False:
            continue
        tp, optional = _base_type(hints[f.name])
        default = (shown or {}).get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        if "(default" not in help_text:
            help_text += f" (default: {default})"
        if tp is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
            continue
        choices = list(typing.get_args(tp)) if typing.get_origin(tp) is Literal else None
        group.add_argument(flag(f.name), type=_parser_for(tp, optional), choices=choices, default=argparse.SUPPRESS,
                           metavar=None if choices else f.name.upper(), help=help_text)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config. Tables are flattened: `[model] n_layer = 4` == `n_layer = 4`."""
    path = Path(path)
    if not path.is_file():
        raise MinigptError(f"--config {path}: no such file")
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MinigptError(f"--config {path}: cannot parse ({e}); fix the file's syntax") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({k.replace("-", "_"): v for k, v in value.items()})
        else:
            flat[key.replace("-", "_")] = value
    return flat


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], values: dict[str, Any], *, strict: bool = True, source: str = "config") -> T:
    """Build `cls` from a dict; unknown keys are an error when strict (naming the key), ignored otherwise."""
    names = field_names(cls)
    unknown = sorted(set(values) - names)
    if strict and unknown:
        raise MinigptError(f"{source}: unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
                           f"known: {', '.join(sorted(names))}")
    hints = _hints(cls)
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            continue
        tp, _ = _base_type(hints[k])
        if tp is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kwargs[k] = v
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def resolve_config(cls: type[T], args: argparse.Namespace | None = None, *, file_values: dict[str, Any] | None = None,
            base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> T:
    """defaults < base (e.g. a parent checkpoint) < overrides (e.g. a preset) < config file < flags."""
    names = field_names(cls)
    values: dict[str, Any] = {}
    for layer in (base, overrides, file_values):
        values.update({k: v for k, v in (layer or {}).items() if k in names})
    if args is not None:
        values.update({k: v for k, v in vars(args).items() if k in names})
    return from_dict(cls, values, strict=False)


def check(condition: bool, field: str, message: str) -> None:
    """Validation helper for __post_init__: `check(self.lr > 0, "lr", "must be positive")`."""
    if not condition:
        raise MinigptError(f"{flag(field)}: {message}")
