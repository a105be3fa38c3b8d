"""Dataclass fields as command-line flags: ``--name-with-dashes``, typed from the annotation, booleans as
``--x/--no-x``, lists comma-separated; unset flags stay None so the dataclass default applies.
Shared by every study's command line (``mech-interp``, ``vit-hooks``, ``train-gpt2-bias``), so they read alike.
Imports no torch."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any


def _flag_type(annotation: Any) -> tuple[Any, bool, bool]:
    """(argparse type, is_list, is_bool) for a dataclass field annotation."""
    if isinstance(annotation, str):
        annotation = eval(
            annotation, {"list": list, "str": str, "int": int, "float": float, "bool": bool, "None": None}
        )
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return str, True, False
    return annotation, False, annotation is bool


def add_fields(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, is_list, is_bool = _flag_type(f.type)
        flag = "--" + f.name.replace("_", "-")
        help_text = _with_default(f.metadata.get("help", ""), f)
        if is_bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(
                flag, dest=f.name, type=kind, default=None, help=help_text, metavar="A,B" if is_list else f.name.upper()
            )


def _with_default(help_text: str, f: dataclasses.Field) -> str:
    """The help with the field's default, unless it already says what the default is (a default whose value means
    something else, such as None for 'every block', is described in the help itself)."""
    if "default" in help_text or f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return help_text
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default is None or default == [] or default == "":
        return help_text
    shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else \
        ("on" if default is True else "off" if default is False else default)
    return f"{help_text} (default: {shown})" if help_text else f"default: {shown}"


def collect(ns: argparse.Namespace, cls: type, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The flags of ``cls`` that were given (less ``skip``), as keyword arguments."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(ns, f.name, None)
        if value is not None and f.name not in skip:
            values[f.name] = [v.strip() for v in value.split(",") if v.strip()] if _flag_type(f.type)[1] else value
    return values
