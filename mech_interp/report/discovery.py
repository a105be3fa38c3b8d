"""Finding the runs of a results tree: every directory with a ``manifest.json``, grouped by model.

Generic on purpose: a run is described by what its manifest says and what files it holds, so the
runs of ``vit-hooks`` and ``train-gpt2-bias`` are listed like those of ``mech-interp``. A run's
model is its parent directory (``<results>/<model>/<run>``), the layout every writer shares.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..runs.output import MANIFEST

SITE_MARKER = ".mech-interp-report"  # written into every site, so that a site is never read as results
TABLE_SUFFIXES = (".parquet", ".csv")
TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class Run:
    path: Path  # the run directory
    rel: str  # its path under the results root, posix ("." for the root itself)
    model: str  # its parent's path under the results root: the model page it is shown on
    manifest: dict[str, Any]
    manifest_ok: bool
    tables: dict[str, Path] = field(default_factory=dict)  # name -> parquet if present, else CSV
    csvs: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)  # name -> HTML
    images: dict[str, Path] = field(default_factory=dict)  # name -> PNG
    texts: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def experiment(self) -> str:
        return str(self.manifest.get("experiment") or self.name)

    @property
    def when(self) -> str:
        """The manifest's ``finished_at``; else the manifest file's modification time (UTC), marked so."""
        if self.manifest.get("finished_at"):
            return str(self.manifest["finished_at"])
        mtime = (self.path / MANIFEST).stat().st_mtime
        return datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds") + " (file time)"

    @property
    def commit(self) -> str:
        return str(self.manifest.get("git_commit") or "-")

    @property
    def model_name(self) -> str | None:
        info = self.section("model")
        if info.get("name"):
            return str(info["name"])
        source = self.manifest.get("model_source")
        return source if isinstance(source, str) else None

    def section(self, key: str) -> dict[str, Any]:
        """A manifest's table (options, config, summary, ...), or {} where it is absent or not a table."""
        value = self.manifest.get(key)
        return value if isinstance(value, dict) else {}


def _read(path: Path) -> tuple[dict[str, Any], bool]:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}, False
    return (manifest, True) if isinstance(manifest, dict) else ({}, False)


def _describe(path: Path, root: Path) -> Run:
    rel = path.relative_to(root).as_posix()
    parent = path.parent.relative_to(root).as_posix() if path != root else "."
    manifest, ok = _read(path)
    run = Run(path, rel, root.name if parent == "." else parent, manifest, ok)
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        stem, suffix = file.stem, file.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            if suffix == ".csv":
                run.csvs[stem] = file
            if suffix == ".parquet" or stem not in run.tables:
                run.tables[stem] = file
        elif suffix == ".html":
            run.figures[stem] = file
        elif suffix == ".png":
            run.images[stem] = file
        elif suffix in TEXT_SUFFIXES:
            run.texts[file.name] = file
    return run


def find_runs(root: Path, skip: Path | None = None) -> list[Run]:
    """Every complete run under ``root``, sorted by path. Not read: ``.partial`` directories (runs in
    progress or killed), ``skip`` (the site being written) and any earlier site. Links are not followed."""
    root = Path(os.path.abspath(root))  # "." has no name to give a run directly under it
    skip_real = os.path.realpath(skip) if skip is not None else None
    runs = []
    for here, dirs, files in os.walk(root):
        path = Path(here)
        if MANIFEST in files and (path / MANIFEST).is_file():
            runs.append(_describe(path, root))
            dirs[:] = []  # a run's subdirectories (a checkpoint's tokenizer) are its own files
            continue
        dirs[:] = sorted(d for d in dirs if not d.endswith(".partial")
                         and not (path / d / SITE_MARKER).exists()
                         and os.path.realpath(path / d) != skip_real)
    return sorted(runs, key=lambda r: r.rel)


def by_model(runs: list[Run]) -> dict[str, list[Run]]:
    models: dict[str, list[Run]] = {}
    for run in runs:
        models.setdefault(run.model, []).append(run)
    return models
