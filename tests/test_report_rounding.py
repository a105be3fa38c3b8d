"""How the report shows a number (``mech_interp.report.rounding.rounded``): integers in full, floats to
4 significant digits (to the unit from 1000 up), exponent form outside [0.001, 100000)."""

from __future__ import annotations

import numpy as np
import pytest

from mech_interp.report.rounding import rounded
from mech_interp.report.tables import cell


@pytest.mark.unit
@pytest.mark.parametrize("value, shown", [
    (0, "0"), (7, "7"), (np.int64(13661568), "13661568"), (-40, "-40"),  # integers in full, exponent never
    (0.0, "0"), (-0.0, "0"), (3.0, "3"), (12.5, "12.5"), (0.5, "0.5"),  # no trailing zeros
    (260.2935180421096, "260.3"), (0.022278703, "0.02228"), (1.0000001, "1"),  # 4 significant digits
    (3918.44482421875, "3918"), (23456.7, "23457"), (99999.7, "100000"),  # from 1000 up, to the unit
    (179729.1, "1.797e+05"), (3.1e6, "3.1e+06"), (-2.5e7, "-2.5e+07"),  # from 100000 up: exponent form
    (0.001, "0.001"), (0.00012345, "1.234e-04"), (-6.561178267361356e-08, "-6.561e-08"),  # below 0.001: exponent
    (np.float32(0.1), "0.1"), (np.float64(2.0), "2"),  # numpy scalars as their value
    (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"),
])
def test_a_number_is_shown_to_its_meaningful_digits(value, shown):
    assert rounded(value) == shown


@pytest.mark.unit
def test_a_table_cell_shows_the_rounded_number_and_sorts_by_the_exact_one():
    shown = cell(np.float32(3918.44482421875))
    assert shown.html == "3918" and float(shown.sort) == pytest.approx(3918.44482421875)
    assert cell(np.float64(179729.1234)).sort == "179729.1234"
    assert cell([0.022278703, 7]).html == "0.02228, 7"  # list-valued columns, each element
    assert cell(True).html == "true" and cell(5).html == "5"
