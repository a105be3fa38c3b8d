"""Where a run's files go in the site, and their copies: manifest, texts, CSV tables, figures.

Copied, not linked, so that the site can be moved or archived on its own. A table written only as
parquet gets a CSV written here, so that every table shown has its whole data one click away.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..runs.output import MANIFEST
from .discovery import Run
from .figures import copy_figure


def run_folder(site: Path, run: Run) -> Path:
    return site / "runs" / (run.rel if run.rel != "." else "_root")


def copy_run(run: Run, site: Path, plotly_js: Path) -> None:
    folder = run_folder(site, run)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.path / MANIFEST, folder / MANIFEST)
    for name, path in run.texts.items():
        shutil.copyfile(path, folder / name)
    for name, path in run.tables.items():
        if name in run.csvs:
            shutil.copyfile(run.csvs[name], folder / f"{name}.csv")
        else:
            import pandas as pd

            try:
                pd.read_parquet(path).to_csv(folder / f"{name}.csv", index=False)
            except ValueError:
                pass  # unreadable: its page says so
    for name, path in run.figures.items():
        copy_figure(path, folder / f"{name}.html", plotly_js)
    for name, path in run.images.items():
        shutil.copyfile(path, folder / f"{name}.png")
