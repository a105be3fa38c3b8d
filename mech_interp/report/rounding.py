"""How the pages show a number: to the digits a reader can use, while the sort order, the linked
CSV and parquet files and the manifests keep every digit.

A float32 mean printed with all its digits (``3918.444824``) says more than was measured and hides
its size; ``3918`` and ``1.797e+05`` say what matters at a glance.
"""

from __future__ import annotations

import math
import numbers
import re

SIGNIFICANT = 4
POSITIONAL = (1e-3, 1e5)  # magnitudes shown as plain decimals; outside, in exponent form
DEFINITION = (f"numbers to {SIGNIFICANT} significant digits (to the unit from {10 ** (SIGNIFICANT - 1)} up), in "
              f"exponent form below {POSITIONAL[0]:g} and from {POSITIONAL[1]:,.0f} up; integers in full")


def rounded(value: float | int) -> str:
    """``value`` as the pages show it: an integer in full; a float to ``SIGNIFICANT`` significant digits
    (to the unit from 1000 up), in exponent form outside ``POSITIONAL``; ``nan``, ``inf``, ``-inf``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if POSITIONAL[0] <= magnitude < POSITIONAL[1]:
        decimals = max(SIGNIFICANT - 1 - math.floor(math.log10(magnitude)), 0)
        text = f"{value:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return re.sub(r"\.?0*e", "e", f"{value:.{SIGNIFICANT - 1}e}")
