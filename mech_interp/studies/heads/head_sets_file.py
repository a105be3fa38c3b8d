"""A head_sets.csv (written by ``head-scores``, or by hand) as ``head-ablation --head-sets`` reads it:
every cell checked, and anything else refused in one line naming the file, the row and the value,
before any model loads. Imports no torch (pandas only where a model has loaded).

A float cell is never truncated: ``1.7`` would otherwise ablate head 1 (pandas reads the column as
floats, ``int`` drops the fraction); ``3.0``, how a float column writes a whole number, is 3.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.head_names import head_name
from ...storage.user_files import decode_utf8, require_file
from ...validation.errors import UsageError
from .named_heads import require_in_model

if TYPE_CHECKING:
    import pandas as pd

SET_NAMES = ("top", "bottom", "random")
COLUMNS = ("set", "draw", "layer", "head")
EXPECTED = f"the head_sets.csv of a head-scores run (UTF-8, a header with columns {', '.join(COLUMNS)}, one row per head)"
WHOLE = re.compile(r"([0-9]+)(?:\.0*)?")


@dataclass(frozen=True)
class HeadSetRow:
    set: str
    draw: int
    layer: int
    head: int
    where: str  # "--head-sets 'f.csv' row 3 (line 4)", for refusals that need the model


def _why_not_an_index(text: str) -> str:
    if not text:
        return "an empty cell"
    try:
        number = float(text)
    except ValueError:
        return "not a number"
    if math.isnan(number):
        return "NaN"
    if number < 0:
        return "negative"
    if math.isinf(number):
        return "infinite"
    if number != int(number):
        return "not a whole number"
    return "not a plain decimal integer"  # float() also reads other scripts' digits, exponents, a sign


def _index(cell: str, column: str, where: str) -> int:
    match = WHOLE.fullmatch(cell.strip())
    if match is None:
        raise UsageError(f"{where}: {column} {cell!r} is not allowed ({_why_not_an_index(cell.strip())}): "
                         f"expected a 0-based integer in ASCII digits 0-9")
    return int(match[1])


def _text(path: str) -> tuple[str, str]:
    shown = f"--head-sets {path!r}"
    require_file(Path(path), "--head-sets", EXPECTED, path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"{shown} cannot be read: {err.strerror}") from None
    # utf-8-sig: a spreadsheet's byte-order mark is no part of the first column name
    text = decode_utf8(data, shown, f"expected {EXPECTED}", codec="utf-8-sig")
    if not text.strip():
        raise UsageError(f"{shown} is empty: expected {EXPECTED}")
    return text, shown


def read_head_set_rows(path: str) -> list[HeadSetRow]:
    """Every row of ``path``, checked on its own and against the other rows of its set."""
    return _rows(*_text(path))


def _rows(text: str, shown: str) -> list[HeadSetRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
        twice = sorted({name for name in header if header.count(name) > 1})
        missing = [name for name in COLUMNS if name not in header]
        if twice or missing:
            raise UsageError(f"{shown} " + (f"names column {twice[0]!r} twice" if twice else
                                            f"has no column {', '.join(missing)}") + f": expected {EXPECTED}")
        rows: list[HeadSetRow] = []
        seen: dict[tuple[str, int, int, int], str] = {}
        for cells in reader:
            if not cells:
                continue  # an empty line, which pandas skips too
            where = f"{shown} row {len(rows) + 1} (line {reader.line_num})"
            if len(cells) != len(header):
                raise UsageError(f"{where} has {len(cells)} cells, the header {len(header)}: expected {EXPECTED}")
            values = dict(zip(header, cells))
            name = values["set"].strip()
            if name not in SET_NAMES:
                raise UsageError(f"{where}: set {values['set']!r} is not allowed: expected one of {', '.join(SET_NAMES)}")
            row = HeadSetRow(name, *(_index(values[c], c, where) for c in ("draw", "layer", "head")), where)
            if row.draw and name != "random":
                raise UsageError(f"{where}: draw {row.draw} of set {name} is not allowed: only random sets have "
                                 "draws other than 0")
            key = (name, row.draw, row.layer, row.head)
            if key in seen:
                raise UsageError(f"{where}: head {head_name(row.layer, row.head)} is named twice in set {name} draw {row.draw} "
                                 f"(also {seen[key].removeprefix(shown + ' ')}): give each head once per set")
            seen[key] = where
            rows.append(row)
    except csv.Error as err:
        raise UsageError(f"{shown} cannot be read as CSV (line {reader.line_num}: {err}): expected {EXPECTED}") from None
    if not rows:
        raise UsageError(f"{shown} has no heads: expected {EXPECTED}")
    return rows


def read_head_sets(path: str, n_layers: int, n_heads: int, model: str) -> pd.DataFrame:
    """The head sets of ``path`` as a DataFrame (its other columns, such as score and rank_by, kept), every
    head checked against the model."""
    import pandas as pd

    text, shown = _text(path)
    rows = _rows(text, shown)
    for row in rows:
        require_in_model(row.layer, row.head, n_layers, n_heads, model, f"{row.where}: ")
    try:
        sets = pd.read_csv(io.StringIO(text))
    except ValueError as err:  # pandas' ParserError is one
        raise UsageError(f"{shown} cannot be read as CSV ({err}): expected {EXPECTED}") from None
    sets.columns = [str(name).strip() for name in sets.columns]
    if len(sets) != len(rows):  # pandas and csv differ on this file's quoting: no column can be trusted
        raise UsageError(f"{shown} cannot be read as CSV (rows split ambiguously): expected {EXPECTED}")
    for name in COLUMNS:
        sets[name] = [getattr(row, name) for row in rows]
    return sets
