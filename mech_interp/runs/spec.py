"""What one run is asked to be, and resolving it once into what everything downstream reads.

A ``RunSpec`` is what a command line or a batch entry asks for: an experiment (of a study), the
study's options and the experiment's parameters. ``resolve`` turns it, once, into a
``ResolvedRun``: the options and config validated, the model parsed (a local model's metadata read
once, shared by every run of that model through ``models``), the run directory's name and the
identity. A run's directory is ``<out>/<model>/<experiment>`` followed by ``__key=value`` for every
parameter or option that differs from its default; a finished run counts as done only when its
manifest holds the same identity (for a local model, the size and mtime of its files too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..validation.errors import UsageError
from .studies import find_experiment
from .study import ResolvedRun


@dataclass
class RunSpec:
    experiment: str
    options: Any = None  # the study's options dataclass; None: its defaults
    params: dict[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False)  # where it was asked for (a batch file entry), for messages
    study: str | None = None  # None: the one of mech-interp's studies that has the experiment


def resolve(spec: RunSpec, models: dict[tuple, Any] | None = None) -> ResolvedRun:
    """``spec`` resolved; ``models`` (model key -> resolved model) lets the runs of one command parse each model once."""
    try:
        study, experiment = find_experiment(spec.experiment, (spec.study,) if spec.study else None)
        options = spec.options if spec.options is not None else study.options_cls()
        if not isinstance(options, study.options_cls):
            raise UsageError(f"experiment {experiment.name!r} of study {study.name!r} takes "
                             f"{study.options_cls.__name__}, not {type(options).__name__}")
        config = experiment.make_config(spec.params)
        model = None
        if experiment.needs_model:
            key = (study.name, *study.model_key(options))
            if models is not None and key in models:
                model = models[key]
            else:
                model = study.resolve_model(options)
                if models is not None:
                    models[key] = model
        name = study.run_name(experiment, options, config)
        slug = model.slug if model is not None else study.model_free_slug(experiment)
        return ResolvedRun(study, experiment, options, config, model, name, slug,
                           study.identity(experiment, options, config, model), spec.origin, spec)
    except UsageError as err:
        if spec.origin:
            raise UsageError(f"{spec.origin}: {err}") from None
        raise
