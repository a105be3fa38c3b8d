"""Atomic run directories: tables (parquet + CSV), figures (HTML + PNG) and a JSON manifest.

A run is built in ``<run_dir>.partial/`` and renamed to ``<run_dir>`` only once everything,
the manifest last, is written, so a directory that exists under its final name is complete.
Pieces saved with ``RunWriter.save_piece`` survive a kill inside ``.partial`` and are reused by
the next attempt at the same run (resume). Figures reference one ``plotly.min.js`` at the root of
the results tree instead of embedding 4 MB each.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

MANIFEST = "manifest.json"
PACKAGES = ("torch", "transformer-lens", "transformers", "numpy", "pandas", "plotly", "kaleido", "datasets", "timm")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def is_complete(run_dir: Path) -> bool:
    return (run_dir / MANIFEST).is_file()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunWriter:
    """Collects one run's outputs in ``<run_dir>.partial`` and publishes them with ``commit``."""

    def __init__(self, run_dir: Path, results_root: Path, model_source: str | None = None):
        self.run_dir = Path(run_dir)
        self.results_root = Path(results_root)
        self.partial = self.run_dir.with_name(self.run_dir.name + ".partial")
        self.files: list[str] = []
        self.model_source = model_source
        owner = self.partial / "pieces" / "_model_source.json"
        if owner.is_file() and json.loads(owner.read_text()) != model_source:
            # pieces of another model that shares this directory name: never resume from them
            shutil.rmtree(self.partial / "pieces")

    def _dir(self) -> Path:
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def load_piece(self, key: str) -> Any | None:
        path = self.partial / "pieces" / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_piece(self, key: str, value: Any) -> None:
        pieces = self._dir() / "pieces"
        pieces.mkdir(exist_ok=True)
        _atomic_write_text(pieces / "_model_source.json", json.dumps(self.model_source))
        _atomic_write_text(pieces / f"{key}.json", json.dumps(value))

    def table(self, name: str, df: pd.DataFrame) -> None:
        base = self._dir() / name
        df.to_parquet(base.with_suffix(".parquet"), index=False)
        df.to_csv(base.with_suffix(".csv"), index=False)
        self.files += [f"{name}.parquet", f"{name}.csv"]

    def text(self, name: str, text: str) -> None:
        (self._dir() / name).write_text(text, encoding="utf-8")
        self.files.append(name)

    def figure(self, name: str, fig) -> None:
        from .figures import write_figure

        written = write_figure(fig, self._dir() / name, self._plotly_js_src())
        self.files += [p.name for p in written]

    def _plotly_js_src(self) -> str:
        from .figures import ensure_plotly_js

        js = ensure_plotly_js(self.results_root)
        return os.path.relpath(js, self.run_dir)

    def commit(self, manifest: dict[str, Any]) -> Path:
        manifest = {
            **manifest,
            "files": sorted(self.files),
            "packages": package_versions(),
            "git_commit": git_commit(),
            "command": sys.argv,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        shutil.rmtree(self._dir() / "pieces", ignore_errors=True)
        _atomic_write_text(self._dir() / MANIFEST, json.dumps(manifest, indent=2, default=str))
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)  # an explicit rerun (--force) replaces the old result
        os.replace(self.partial, self.run_dir)
        return self.run_dir

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)
