"""Printed changes: a signed percentage while moderate, a factor from 10x up (or down to a tenth)."""

from __future__ import annotations

import pytest

from mech_interp.metrics.relative_change import change_text


@pytest.mark.parametrize("new, old, text", [
    (28.15, 28.133, "+0.06%"),
    (26.698, 27.177, "-1.76%"),
    (8.571e6, 28.133, "x3.05e+05"),  # SmolLM2's set_zero: +30465439.51% as a percentage
    (280.0, 28.0, "x10"),
    (279.0, 28.0, "+896.43%"),
    (0.01, 28.0, "x0.000357"),
    (1.0, 0.0, "n/a"),
    (float("nan"), 1.0, "n/a"),
])
def test_changes_read_as_percentages_until_they_are_factors(new, old, text):
    assert change_text(new, old) == text
