"""The names of 0.1's ``mech_interp.runs.experiments``, kept for one release so that notebooks written against it
keep working. Nothing in the package imports this module: the engine's own names are ``runs.experiment``
(``Experiment``, ``ExperimentResult``) and ``runs.studies`` (``get_study(name).experiment(...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .experiment import Experiment, ExperimentResult
from .spec import RunSpec, resolve
from .studies import DEFAULT_STUDIES, find_experiment, get_study

__all__ = ["Experiment", "ExperimentResult", "get_experiment", "list_experiments"]


def get_experiment(name: str, study: str | None = None) -> Experiment:
    """An experiment of mech-interp's studies (``lm``, ``heads``) by name, or of ``study``. Kept for notebooks written
    against 0.1, for one release: the ``fn`` it returns also takes 0.1's call ``fn(model, options, config)``.
    ``mech_interp.runs.studies.get_study(name).experiment(...)`` is the engine's own lookup."""
    found_study, experiment = find_experiment(name, (study,) if study else None)
    return _Release01Experiment(experiment.name, experiment.config_cls, experiment.target, experiment.doc,
                                experiment.needs_model, experiment.sites, study=found_study.name)


@dataclass(frozen=True)
class _Release01Experiment(Experiment):
    study: str = ""

    @property
    def fn(self) -> Callable[..., ExperimentResult]:
        fn = super().fn

        def call(*args, **kwargs) -> ExperimentResult:
            if len(args) == 3:  # 0.1: (model, options, config); the context is made as the engine makes it
                model, options, config = args
                run = resolve(RunSpec(self.name, options, {}, study=self.study))
                args = (get_study(self.study).context_from(model, run), config)
            return fn(*args, **kwargs)

        return call


def list_experiments(study: str | None = None) -> list[str]:
    """The experiment names of mech-interp's studies (or of ``study``), in command-list order."""
    return [name for s in ((study,) if study else DEFAULT_STUDIES) for name in get_study(s).experiments]
