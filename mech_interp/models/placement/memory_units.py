"""Byte sizes as a user writes them (``--max-memory 20GiB``) and as the planner prints them.

Decimal (kB, MB, GB, TB: powers of 1000) and binary (KiB, MiB, GiB, TiB: powers of 1024) units, as accelerate's
``max_memory`` takes them, and plain bytes; case-insensitive except that ``b`` alone means bytes.
"""

from __future__ import annotations

import math
import re

from ...validation.errors import UsageError

UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
ACCEPTED = "a number with a unit: B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 20GiB"
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*")


def parse_bytes(text: str, what: str = "--max-memory") -> int:
    """``text`` ("20GiB", "512 MB", "1.5TB") in bytes; one-line refusal for anything else."""
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None or match[2].lower() not in UNITS:
        raise UsageError(f"{what} {text!r} is not a size: expected {ACCEPTED}")
    size = float(match[1]) * UNITS[match[2].lower()]
    if not math.isfinite(size) or size < 1:
        raise UsageError(f"{what} {text!r} is not a size: expected {ACCEPTED} of at least one byte")
    return int(size)


def format_bytes(n: float) -> str:
    """Binary units, three significant digits: 1.50 GiB, 812 MiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"
