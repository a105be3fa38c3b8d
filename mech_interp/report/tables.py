"""Tables as sortable HTML: a click on a header sorts by that column (``sort.js``, by each cell's
``data-v`` sort value, numeric when every value of the column is a number). Numbers are shown
rounded (``rounding``) and sorted by their every digit."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .rounding import rounded
MAX_ROWS = 500  # rows shown per table; the whole table is the linked CSV


@dataclass
class Cell:
    html: str  # what is shown, already escaped
    sort: str  # what it sorts by: a number's repr or the plain text


def cell(value: Any) -> Cell:
    """A table value shown plainly: numbers rounded, NaN, NA and None empty."""
    import pandas as pd

    if hasattr(value, "tolist") and type(value) not in (int, float, str):  # numpy's float64 is a float too
        value = value.tolist()  # numpy scalars and arrays (list-valued columns): their sort value a plain repr
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return Cell("", "")
    if isinstance(value, float) and math.isinf(value):
        return Cell(rounded(value), "Infinity" if value > 0 else "-Infinity")  # what JavaScript's Number() reads
    if isinstance(value, bool):
        return Cell(str(value).lower(), str(value).lower())
    if isinstance(value, (int, float)):
        return Cell(rounded(value), repr(value))
    if isinstance(value, (list, tuple)):
        text = ", ".join(cell(v).html for v in value)
        return Cell(text, html.unescape(text))
    text = str(value)
    return Cell(html.escape(text), text)


def sortable_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], table_id: str = "",
                   titles: Sequence[str] | None = None) -> str:
    """``titles``: a tooltip per header (a column's definition)."""
    head = "".join((f'<th title="{html.escape(titles[i])}">' if titles and titles[i] else "<th>")
                   + html.escape(h) + "</th>" for i, h in enumerate(headers))
    body = "\n".join("<tr>" + "".join(f'<td data-v="{html.escape(c.sort)}">{c.html}</td>' for c in row) + "</tr>"
                     for row in rows)
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return f'<table class="sortable"{ident}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def read_head(path: Path, n: int = MAX_ROWS):
    """(first ``n`` rows as a DataFrame, total rows); a parquet file is read no further than needed."""
    import pandas as pd

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        first = next(file.iter_batches(batch_size=max(n, 1)), None)
        frame = first.to_pandas() if first is not None else file.schema_arrow.empty_table().to_pandas()
        return frame.head(n), file.metadata.num_rows
    with open(path, "rb") as f:  # counted without parsing: a CSV-only table may be large
        total = max(sum(1 for _ in f) - 1, 0)
    return pd.read_csv(path, nrows=n), total


def frame_table(frame, table_id: str = "") -> str:
    rows = [[cell(v) for v in record] for record in frame.itertuples(index=False, name=None)]
    return sortable_table([str(c) for c in frame.columns], rows, table_id)
