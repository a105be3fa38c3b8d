"""Experiments: a config dataclass plus a function named by ``"module:function"``, imported on first use.

An experiment function takes the study's loaded model context, its config and, when it declares the
parameter, its resumable ``pieces`` (``fn(context, config, pieces=writer)``), and returns an
``ExperimentResult``; an experiment with ``needs_model=False`` reads only files and is called
``fn(config)``. The dataclass fields become CLI flags and config-file keys, so ``--help`` and batch
validation never import torch, TransformerLens or timm.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..validation.errors import UsageError


@dataclass
class ExperimentResult:
    tables: dict[str, Any]  # name -> pandas DataFrame
    figures: dict[str, Any]  # name -> plotly Figure
    summary: dict[str, Any]  # JSON-able headline numbers, also stored in the manifest
    lines: list[str]  # human-readable summary printed at the end of a run
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # name -> writer of a file in its own format


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type
    target: str  # "package.module:function", imported on first use
    doc: str
    needs_model: bool = True

    @property
    def fn(self) -> Callable[..., ExperimentResult]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)

    def run(self, context: Any, config: Any, pieces: Any = None) -> ExperimentResult:
        fn = self.fn
        if not self.needs_model:
            return fn(config)
        kwargs = {"pieces": pieces} if pieces is not None and "pieces" in inspect.signature(fn).parameters else {}
        return fn(context, config, **kwargs)

    def make_config(self, params: dict[str, Any]) -> Any:
        names = [f.name for f in dataclasses.fields(self.config_cls)]
        if not isinstance(params, dict):
            raise UsageError(f"parameters for experiment {self.name!r} must be a table, got {params!r}")
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise UsageError(f"unknown parameter {unknown[0]!r} for experiment {self.name!r}: accepted {', '.join(names)}")
        try:
            return self.config_cls(**params)
        except (TypeError, ValueError) as err:
            if isinstance(err, UsageError):
                raise
            raise UsageError(f"bad parameters for {self.name!r}: {err}") from err

    @property
    def parameters(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.config_cls)}


def get_experiment(name: str, study: str | None = None) -> Experiment:
    """An experiment of mech-interp's studies (``lm``, ``heads``) by name, or of ``study``. Kept for notebooks written
    against 0.1, for one release: the ``fn`` it returns also takes 0.1's call ``fn(model, options, config)``.
    ``mech_interp.runs.studies.get_study(name).experiment(...)`` is the engine's own lookup."""
    from .studies import find_experiment

    found_study, experiment = find_experiment(name, (study,) if study else None)
    return _Release01Experiment(experiment.name, experiment.config_cls, experiment.target, experiment.doc,
                                experiment.needs_model, found_study.name)


@dataclass(frozen=True)
class _Release01Experiment(Experiment):
    study: str = ""

    @property
    def fn(self) -> Callable[..., ExperimentResult]:
        fn = super().fn

        def call(*args, **kwargs) -> ExperimentResult:
            if len(args) == 3:  # 0.1: (model, options, config); the context is made as the engine makes it
                from .spec import RunSpec, resolve
                from .studies import get_study

                model, options, config = args
                run = resolve(RunSpec(self.name, options, {}, study=self.study))
                args = (get_study(self.study).context_from(model, run), config)
            return fn(*args, **kwargs)

        return call


def list_experiments(study: str | None = None) -> list[str]:
    """The experiment names of mech-interp's studies (or of ``study``), in command-list order."""
    from .studies import DEFAULT_STUDIES, get_study

    return [name for s in ((study,) if study else DEFAULT_STUDIES) for name in get_study(s).experiments]
