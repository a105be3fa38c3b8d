"""The follow-up study's engine side: the language-model engine (``LanguageModelStudy``), plus experiments over a
series of checkpoints (``SeriesExperiment``), which take no ``--model``: their config names the checkpoints
(``series``/``models``) and how to load them, and the function loads each in turn, ``fn(config, pieces=...)``.

For such a run the study checks the series before anything loads (``emergence.checked_series``), makes every
checkpoint's size and mtime part of the run's identity (a series trained further, or a checkpoint written again, makes
a finished run stale; the default series is named by its recipe, ``default_series``), writes its results under ``<out>/checkpoint-series/`` and records the checkpoints in the
manifest. ``study followups`` runs the experiments that take a model; a series is asked for by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ...models.language_study import LAYER_CONVENTION, LanguageModelStudy
from ...runs.experiment import Experiment, ExperimentResult
from ...runs.study import ResolvedRun

SERIES_SLUG = "checkpoint-series"  # the results directory of the runs over a series, which no one --model names


@dataclass(frozen=True)
class SeriesExperiment(Experiment):
    """An experiment over the checkpoint series its config names: ``fn(config, pieces=...)``, no model context."""

    needs_model: bool = False

    def run(self, context: Any, config: Any, pieces: Any = None) -> ExperimentResult:
        return self.fn(config, pieces=pieces)


class FollowupsStudy(LanguageModelStudy):
    def __init__(self, name: str, title: str, experiments: list[Experiment], default_runs: tuple[str, ...] = (),
                 optional_runs: tuple[str, ...] = ()):
        super().__init__(name, title, experiments, default_runs or tuple(e.name for e in experiments if e.needs_model),
                         optional_runs)

    def model_free_slug(self, experiment: Experiment) -> str:
        return SERIES_SLUG

    def check(self, run: ResolvedRun, seen: set, check_devices: bool = True) -> None:
        if run.model is not None:
            return super().check(run, seen, check_devices)
        from .emergence import checked_series

        checked_series(run.config, check_devices)

    def identity(self, experiment: Experiment, options: Any, config: Any, model: Any) -> dict[str, Any]:
        if model is not None:
            return super().identity(experiment, options, config, model)
        from .default_series import recipe
        from .emergence import series_of

        checkpoints = {"default_series": recipe()} if config.uses_default_series else \
            [c.identity() for c in series_of(config)]
        return {"experiment": experiment.name, "config": asdict(config), "checkpoints": checkpoints}

    def manifest(self, context, run: ResolvedRun) -> dict[str, Any]:
        if run.model is not None:
            return super().manifest(context, run)
        from .emergence import series_of

        config = run.config
        return {"series": [{"checkpoint": c.label, "step": c.step, "source": c.source} for c in series_of(config)],
                "criterion": asdict(config.criterion), "tokenization": {"prepend_bos": config.prepend_bos},
                "layer_convention": LAYER_CONVENTION}

    def local_inputs(self, run: ResolvedRun) -> dict[str, int | None]:
        if run.model is not None:
            return super().local_inputs(run)
        if run.config.uses_default_series:
            return {}  # a node trains its own copy of the recipe where it has none
        from .emergence import series_of

        return {c.source: None for c in series_of(run.config) if c.spec is not None and c.spec.path is not None}

    def weight_bytes(self, run: ResolvedRun) -> int | None:
        return super().weight_bytes(run) if run.model is not None else None  # one checkpoint at a time, unknown
