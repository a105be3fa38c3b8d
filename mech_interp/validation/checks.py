"""Checks of config values that become flags, shared by every study's config dataclasses: a bad
value is refused in one line naming the flag and what it accepts. Imports no torch."""

from __future__ import annotations

from typing import Any

from .errors import UsageError

MAX_COUNT = 2**31 - 1  # counts become tensor sizes and splits; past this torch overflows its C integers


def require_at_least(config: Any, minimum: int, *names: str) -> None:
    """Refuse counts below ``minimum``, above ``MAX_COUNT`` and non-integers, with the flag name,
    so they never reach a reshape or split."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_COUNT):
            raise UsageError(f"--{name.replace('_', '-')} {value!r} is not allowed: expected an integer "
                             f"{minimum}..{MAX_COUNT}")


def require_type(config: Any, name: str, kind: type | tuple[type, ...], accepted: str) -> None:
    """Refuse a value that is not a ``kind`` (a bool is no number here)."""
    value = getattr(config, name)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise UsageError(f"--{name.replace('_', '-')} {value!r} is not allowed: expected {accepted}")
