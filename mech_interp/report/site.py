"""Building the site: every input checked before anything is written, the pages written into
``<site>.partial``, then swapped in for the previous site (moved aside to ``<site>.old`` meanwhile),
so that an interrupted report leaves the previous one whole. Of these three directories, the report
replaces or deletes only its own (``ownership``); anything else there is refused, touching nothing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..validation.errors import UsageError
from .comparison import compare
from .comparison_page import write_comparison
from .discovery import Run, by_model, find_runs
from .figures import copy_plotly_js
from .findings import findings
from .index_page import write_index
from .model_page import write_model_page
from .ownership import SITE_MARKER, is_ours, mark
from .page import write_assets
from .page_order import in_paper_order
from .run_files import copy_run
from .tree import ResultsTree

EXPECTED = "a results tree written by mech-interp, vit-hooks or train-gpt2-bias (run directories holding manifest.json)"


@dataclass
class Site:
    out: Path
    runs: list[Run]
    models: dict[str, list[Run]]
    compared: int  # models on the cross-model page
    skipped: dict[Path, str]  # path not read -> why (a link leaving the results tree, a name not UTF-8)


def default_out(results: Path) -> Path:
    return Path(results) / "report"


def _inside(path: Path, parent: Path) -> bool:
    path, parent = Path(os.path.realpath(path)), Path(os.path.realpath(parent))
    return path == parent or parent in path.parents


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _old(out: Path) -> Path:
    return out.with_name(out.name + ".old")


def check_replaceable(out: Path) -> None:
    """Refuses an ``out``, ``<out>.partial`` or ``<out>.old`` that the report did not make: building
    the site there would replace or delete the user's files."""
    ours = f"a directory holding {SITE_MARKER}, which the report writes into each of its own"
    if not is_ours(_partial(out)):
        raise UsageError(f"{str(_partial(out))!r} exists and is not an interrupted report ({ours}): the report builds "
                         "its site there, so move it or name another --out")
    if not is_ours(_old(out)):
        raise UsageError(f"{str(_old(out))!r} exists and is not a site the report moved aside ({ours}): the report "
                         "moves the previous site there while replacing it, so move it or name another --out")
    if out.is_symlink():
        raise UsageError(f"--out {str(out)!r} is a link: name the directory itself (the site replaces it)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is not a directory: name a new directory, an empty one or an "
                         "earlier site")
    if not is_ours(out):
        raise UsageError(f"--out {str(out)!r} holds files that are not an earlier report: name a new directory, "
                         "an empty one or an earlier site (it is replaced)")


def check_inputs(tree: ResultsTree, out: Path) -> list[Run]:
    """The runs to report; refuses a results directory that is missing, not a directory or holds no
    run, and an ``out`` that cannot be written or would overwrite something other than a site."""
    results = tree.root
    if not results.exists():
        raise UsageError(f"results directory {str(results)!r} does not exist: expected {EXPECTED}")
    if not results.is_dir():
        raise UsageError(f"results directory {str(results)!r} is not a directory: expected {EXPECTED}")
    runs = find_runs(tree, skip=out)
    if not runs:
        links = "".join(f" (not read: {str(path)!r} {why})" for path, why in list(tree.skipped.items())[:1])
        raise UsageError(f"results directory {str(results)!r} holds no run manifests{links}: expected {EXPECTED}")
    if _inside(results, out):
        raise UsageError(f"--out {str(out)!r} holds the results directory {str(results)!r}: the site replaces its "
                         "directory, so name a directory outside the results (default: RESULTS_DIR/report)")
    for run in runs:
        if _inside(out, run.path):
            raise UsageError(f"--out {str(out)!r} is inside the run directory {str(run.path)!r}: "
                             "name another directory")
    check_replaceable(out)
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
    check_replaceable(out)  # again: the user may have made one of them while the site was built
    old = _old(out)
    if old.exists():  # a previous swap's, interrupted: the report's own
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(partial, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_site(results: Path, out: Path | str | None = None) -> Site:
    if out is not None and not str(out).strip():
        raise UsageError("--out '' is not allowed: name the directory for the site (default: RESULTS_DIR/report)")
    tree = ResultsTree(results)  # "." has no name for the index, nor a parent for the site: made absolute
    out = Path(os.path.abspath(out)) if out is not None else default_out(tree.root)
    for what, path in (("results directory", tree.root), ("--out", out)):
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:  # the pages and the closing line could not name it
            raise UsageError(f"{what} {str(path)!r} is not UTF-8: name a directory whose path is") from None
    runs = check_inputs(tree, out)
    models = {model: in_paper_order(model_runs) for model, model_runs in by_model(runs).items()}
    partial = _partial(out)
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted report left (checked: the report's own)
    try:
        partial.mkdir(parents=True)
        mark(partial)
        write_assets(partial)
        plotly_js = copy_plotly_js(tree, partial)
        for run in runs:
            copy_run(run, partial, plotly_js)
        found = {run.rel: findings(run) for run in runs}
        for model, model_runs in models.items():
            write_model_page(partial, model, model_runs, found)
        compared = compare(models)
        write_comparison(partial, compared)
        write_index(partial, tree.root, models, found)
        _swap(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Site(out, runs, models, len(compared), tree.skipped)
