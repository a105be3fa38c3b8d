"""A change as a reader takes it in: a signed percentage while it is moderate, a factor once it is large.

``+30465439.51%`` hides its size in its digits and shows a 7th-digit float32 wobble as a new number; ``x3.05e+05`` says
the same and only that. The tables keep the exact percentage (``*_change_pct``); this is what a printed line shows.
"""

from __future__ import annotations

FACTOR_FROM = 10.0  # at least 10x (or at most a tenth) of the original: printed as a factor
DEFINITION = (f"change of new against old = new / old - 1, printed as a signed percentage (+0.05%); from {FACTOR_FROM:g}x "
              f"up (or at most 1/{FACTOR_FROM:g}) as the factor new / old instead (x3.05e+05); the tables keep the exact "
              "percentage (columns *_change_pct)")


def change_text(new: float, old: float) -> str:
    """``new`` against ``old``: ``+0.05%`` or ``-1.76%``; ``x3.05e+05`` or ``x0.0012`` from ``FACTOR_FROM`` up (or
    below its inverse); ``n/a`` when ``old`` is 0 or either is not a number."""
    try:
        ratio = new / old
    except ZeroDivisionError:
        return "n/a"
    if ratio != ratio:  # NaN
        return "n/a"
    if ratio >= FACTOR_FROM or 0 < ratio <= 1 / FACTOR_FROM:
        return f"x{ratio:.3g}"
    return f"{100 * (ratio - 1):+.2f}%"
