"""The order of the runs on a model page: the paper's, so that a page reads as the paper argues.

Each study's experiments come in the order its registry runs them (``runs.studies``: the studies in
their table's order, each its ``default_runs`` then any other experiment), except where the paper
tells its findings in another order than a study runs its experiments (``PAPER_ORDER``). A run is
placed by the study and experiment its manifest names; a manifest that names no study (written
before manifests did, or by hand) is placed with the first study holding its experiment. Unknown
experiments (a training run, another tool's) come last, alphabetically.
"""

from __future__ import annotations

from functools import cache

from ..runs.studies import STUDIES, get_study
from .discovery import Run

# The language-model study runs feature_view first (it needs no other run); the paper first says where
# massive activations appear (layerwise, Fig. 2), then what they are there (feature_view, Fig. 1),
# what removing them does (intervention, Table 3) and who attends to them (attention, Fig. 6).
PAPER_ORDER = {"lm": ("layerwise", "feature_view", "intervention", "attention")}


@cache
def experiment_order() -> tuple[tuple[str, str], ...]:
    """Every (study, experiment) the registries know, in page order."""
    order: list[tuple[str, str]] = []
    for name in STUDIES:
        study = get_study(name)
        for experiment in (*PAPER_ORDER.get(name, ()), *study.default_runs, *study.experiments):
            if (name, experiment) not in order:
                order.append((name, experiment))
    return tuple(order)


def placed(run: Run) -> tuple[str, str] | None:
    """The (study, experiment) of ``run``, or None for an experiment no registry knows."""
    study = run.fields.get("study")
    return next((key for key in experiment_order() if key[1] == run.experiment and study in (key[0], None)), None)


def _rank(run: Run) -> int:
    order = experiment_order()
    key = placed(run)
    return order.index(key) if key is not None else len(order)


def in_paper_order(runs: list[Run]) -> list[Run]:
    """``runs`` in page order; of one experiment, the run with its plain name (default settings) first,
    the others by name."""
    return sorted(runs, key=lambda run: (_rank(run), run.experiment, run.name != run.experiment, run.name))
