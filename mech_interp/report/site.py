"""Building the site: every input checked before anything is written, the pages written into
``<site>.partial``, then swapped in for the previous site, so that an interrupted report leaves the
previous one whole."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .comparison import compare
from .comparison_page import write_comparison
from .discovery import SITE_MARKER, Run, by_model, find_runs
from .figures import copy_plotly_js
from .index_page import write_index
from .model_page import write_model_page
from .page import write_assets
from .run_files import copy_run

EXPECTED = "a results tree written by mech-interp, vit-hooks or train-gpt2-bias (run directories holding manifest.json)"


@dataclass
class Site:
    out: Path
    runs: list[Run]
    models: dict[str, list[Run]]
    compared: int  # models on the cross-model page


def default_out(results: Path) -> Path:
    return Path(results) / "report"


def _inside(path: Path, parent: Path) -> bool:
    path, parent = Path(os.path.realpath(path)), Path(os.path.realpath(parent))
    return path == parent or parent in path.parents


def check_inputs(results: Path, out: Path) -> list[Run]:
    """The runs to report; refuses a results directory that is missing, not a directory or holds no
    run, and an ``out`` that cannot be written or would overwrite something other than a site."""
    if not results.exists():
        raise UsageError(f"results directory {str(results)!r} does not exist: expected {EXPECTED}")
    if not results.is_dir():
        raise UsageError(f"results directory {str(results)!r} is not a directory: expected {EXPECTED}")
    runs = find_runs(results, skip=out)
    if not runs:
        raise UsageError(f"results directory {str(results)!r} holds no run manifests: expected {EXPECTED}")
    if _inside(results, out):
        raise UsageError(f"--out {str(out)!r} holds the results directory {str(results)!r}: the site replaces its "
                         "directory, so name a directory outside the results (default: RESULTS_DIR/report)")
    for run in runs:
        if _inside(out, run.path):
            raise UsageError(f"--out {str(out)!r} is inside the run directory {str(run.path)!r}: "
                             "name another directory")
    partial = out.with_name(out.name + ".partial")
    if partial.exists() and (not partial.is_dir() or (any(partial.iterdir()) and not (partial / SITE_MARKER).is_file())):
        raise UsageError(f"{str(partial)!r} exists and is not an interrupted report: the report builds its site "
                         "there, so move it or name another --out")
    if out.is_symlink():
        raise UsageError(f"--out {str(out)!r} is a link: name the directory itself (the site replaces it)")
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {str(out)!r} is not a directory: name a new directory, an empty one or an "
                             "earlier site")
        if any(out.iterdir()) and not (out / SITE_MARKER).is_file():
            raise UsageError(f"--out {str(out)!r} holds files that are not an earlier report: name a new directory, "
                             "an empty one or an earlier site (it is replaced)")
    probe = out.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(out)!r}: {str(probe)!r} is not a writable directory")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(out)!r} is not writable")
    return runs


def _swap(partial: Path, out: Path) -> None:
    """``partial`` becomes ``out``; the previous site is removed only once the new one is in place,
    and put back if the swap is interrupted."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(partial, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_site(results: Path, out: Path | str | None = None) -> Site:
    if out is not None and not str(out).strip():
        raise UsageError("--out '' is not allowed: name the directory for the site (default: RESULTS_DIR/report)")
    results = Path(os.path.abspath(results))  # "." has no name for the index, nor a parent for the site
    out = Path(os.path.abspath(out)) if out is not None else default_out(results)
    runs = check_inputs(results, out)
    models = by_model(runs)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted report left
    try:
        partial.mkdir(parents=True)
        (partial / SITE_MARKER).write_text("written by mech-interp report; replaced by the next report\n")
        write_assets(partial)
        plotly_js = copy_plotly_js(results, partial)
        for run in runs:
            copy_run(run, partial, plotly_js)
        for model, model_runs in models.items():
            write_model_page(partial, model, model_runs)
        compared = compare(models)
        write_comparison(partial, compared)
        write_index(partial, results, models)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _swap(partial, out)
    return Site(out, runs, models, len(compared))
