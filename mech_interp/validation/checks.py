"""Checks of config values that become flags, shared by every study's config dataclasses: a bad
value is refused in one line naming the flag and what it accepts. Imports no torch."""

from __future__ import annotations

import math
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


def require_criterion(options: Any) -> None:
    """``min_abs`` and ``min_ratio`` of a study's options: finite, min_abs >= 0, min_ratio > 0 (NaN fails too)."""
    for name in ("min_abs", "min_ratio"):
        require_type(options, name, (int, float), "a number")
    if not (0 <= options.min_abs < math.inf and 0 < options.min_ratio < math.inf):
        raise UsageError(f"criterion needs finite --min-abs >= 0 and --min-ratio > 0, got "
                         f"min_abs={options.min_abs}, min_ratio={options.min_ratio}")


def require_seed(options: Any) -> None:
    require_type(options, "seed", int, "an integer 0..2**63-1")
    if not 0 <= options.seed < 2**63:
        raise UsageError(f"--seed {options.seed} is not allowed: expected an integer 0..2**63-1")


def require_type(config: Any, name: str, kind: type | tuple[type, ...], accepted: str) -> None:
    """Refuse a value that is not a ``kind`` (a bool is no number here)."""
    value = getattr(config, name)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise UsageError(f"--{name.replace('_', '-')} {value!r} is not allowed: expected {accepted}")
