"""Finding the runs of a results tree: every directory with a ``manifest.json``, grouped by model.

Generic on purpose: a run is described by what its manifest says and what files it holds, so the
runs of ``vit-hooks`` and ``train-gpt2-bias`` are listed like those of ``mech-interp``. A run's
model is its parent directory (``<results>/<model>/<run>``), the layout every writer shares.
Nothing outside the tree is read (``tree.ResultsTree``); a manifest that cannot be read, or whose
fields have the wrong types, still lists its run, with a note on its page.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..runs.output import MANIFEST
from ..storage.user_files import parse_nested
from ..validation.errors import UsageError
from .manifest_fields import checked
from .ownership import SITE_MARKER
from .tree import ResultsTree

TABLE_SUFFIXES = (".parquet", ".csv")
TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class Run:
    path: Path  # the run directory
    rel: str  # its path under the results root, posix ("." for the root itself)
    model: str  # its parent's path under the results root: the model page it is shown on
    manifest: dict[str, Any]  # as read, shown on its page
    unreadable: str | None = None  # why the manifest could not be read as a JSON object
    fields: dict[str, Any] = field(default_factory=dict)  # the manifest without the fields of the wrong type
    problems: list[str] = field(default_factory=list)  # one line on each field left out
    skipped: list[str] = field(default_factory=list)  # its files not read: links leaving the tree
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
        return self.fields.get("experiment") or self.name

    @property
    def when(self) -> str:
        """The manifest's ``finished_at``; else the manifest file's modification time (UTC), marked so."""
        if self.fields.get("finished_at"):
            return self.fields["finished_at"]
        mtime = (self.path / MANIFEST).stat().st_mtime
        return datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds") + " (file time)"

    @property
    def commit(self) -> str:
        return self.fields.get("git_commit") or "-"

    @property
    def model_name(self) -> str | None:
        return self.section("model").get("name") or self.fields.get("model_source")

    @property
    def seconds(self) -> float | None:
        return self.fields.get("seconds")

    def section(self, key: str) -> dict[str, Any]:
        """A manifest's table (options, config, summary, ...), or {} where it is absent or not a table."""
        return self.fields.get(key) or {}


def _read(path: Path) -> tuple[dict[str, Any], str | None]:
    """The manifest in ``path``, or {} and why it cannot be read as a JSON object."""
    try:
        manifest = parse_nested(json.loads, (path / MANIFEST).read_text(encoding="utf-8"), MANIFEST)
    except UnicodeDecodeError:
        return {}, "it is not UTF-8"
    except json.JSONDecodeError as err:
        return {}, f"it is not JSON: {err}"
    except UsageError as err:  # nested too deep to read safely
        return {}, str(err)
    except OSError as err:
        return {}, err.strerror or str(err)
    return (manifest, None) if isinstance(manifest, dict) else ({}, "it is not a JSON object")


def _describe(path: Path, tree: ResultsTree) -> Run:
    root = tree.root
    rel = path.relative_to(root).as_posix()
    parent = path.parent.relative_to(root).as_posix() if path != root else "."
    manifest, unreadable = _read(path)
    fields, problems = checked(manifest)
    run = Run(path, rel, root.name if parent == "." else parent, manifest, unreadable, fields, problems)
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        if not tree.named(file):
            continue
        if not tree.holds(file):
            run.skipped.append(file.name)
            continue
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


def find_runs(tree: ResultsTree, skip: Path | None = None) -> list[Run]:
    """Every complete run in ``tree``, sorted by path. Not read: ``.partial`` directories (runs in
    progress or killed), ``skip`` (the site being written), any earlier site, and a run whose manifest
    is a link leaving the tree. Links to directories are not followed: one inside the tree leads to
    runs listed where they are; one leaving it, and a name that is not UTF-8, is remembered in
    ``tree.skipped``."""
    skip_real = os.path.realpath(skip) if skip is not None else None
    runs = []
    for here, dirs, files in os.walk(tree.root):
        path = Path(here)
        if MANIFEST in files and (path / MANIFEST).is_file():
            if tree.holds(path / MANIFEST):
                runs.append(_describe(path, tree))
            dirs[:] = []  # a run's subdirectories (a checkpoint's tokenizer) are its own files, read or not
            continue
        # os.walk does not enter links; those leaving the tree are only looked at to be named
        dirs[:] = sorted(d for d in dirs if tree.named(path / d)
                         and (not (path / d).is_symlink() or tree.holds(path / d))
                         and not d.endswith(".partial")
                         and not (path / d / SITE_MARKER).exists()
                         and os.path.realpath(path / d) != skip_real)
    return sorted(runs, key=lambda r: r.rel)


def by_model(runs: list[Run]) -> dict[str, list[Run]]:
    models: dict[str, list[Run]] = {}
    for run in runs:
        models.setdefault(run.model, []).append(run)
    return models
