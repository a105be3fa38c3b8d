"""Where local copies of data sets live: one function, used by every study and test."""

from __future__ import annotations

import os
from pathlib import Path

DATA_VARIABLE = "MECH_INTERP_DATA"


def data_dirs() -> list[Path]:
    """Directories in ``$MECH_INTERP_DATA`` (separated by ``os.pathsep``), then ``../shared/data``
    beside the checkout; only those that exist."""
    dirs = [Path(p).expanduser() for p in os.environ.get(DATA_VARIABLE, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    return [d for d in dirs if d.is_dir()]


def find_data(relative: str) -> Path | None:
    """The first ``<data dir>/<relative>`` that exists, else None."""
    for d in data_dirs():
        if (d / relative).exists():
            return d / relative
    return None
