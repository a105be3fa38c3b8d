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
        help_text = f.metadata.get("help", "")
        if is_bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(
                flag, dest=f.name, type=kind, default=None, help=help_text, metavar="A,B" if is_list else f.name.upper()
            )


def collect(ns: argparse.Namespace, cls: type, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The flags of ``cls`` that were given (less ``skip``), as keyword arguments."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(ns, f.name, None)
        if value is not None and f.name not in skip:
            values[f.name] = [v.strip() for v in value.split(",") if v.strip()] if _flag_type(f.type)[1] else value
    return values
