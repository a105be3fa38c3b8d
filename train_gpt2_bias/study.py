"""The trainer's comparison as a study of the shared engine: one experiment, ``comparison``, whose model
context is the set of variants trained under one root (``TrainedVariants``: their training
configurations, the analysis runs on each checkpoint, the analyses' massive criterion).

The options name that root (``model``; the comparison lands in ``<root>/comparison``, run with the root
as its results directory) and how the variants were configured (the ``--config`` file and the
flags shared by every variant); the experiment's config is ``ExperimentConfig``. The identity is every
variant's training configuration and the experiment's config, as before the engine ran it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mech_interp.runs.experiment import Experiment
from mech_interp.runs.study import ResolvedRun, Study

from .experiment import ComparisonOptions, ExperimentConfig, TrainedVariants


@dataclass(frozen=True)
class TrainingRoot:
    path: Path

    @property
    def slug(self) -> str:
        return ""  # the comparison lies in the root itself: <root>/comparison

    @property
    def source(self) -> str:
        return str(self.path.resolve())


class TrainerStudy(Study):
    options_cls = ComparisonOptions

    def resolve_model(self, options: ComparisonOptions) -> TrainingRoot:
        return TrainingRoot(Path(options.model))

    def load_key(self, options: ComparisonOptions) -> tuple:
        return (options.model, options.config, repr(sorted(options.train.items())))

    def run_name(self, experiment: Experiment, options: ComparisonOptions, config: Any) -> str:
        return experiment.name  # the configuration is the root's: one comparison per root

    def _configs(self, options: ComparisonOptions, config: ExperimentConfig) -> dict[str, Any]:
        from .experiment import variant_configs

        return variant_configs(options.config, options.train, config)

    def open(self, run: ResolvedRun) -> TrainedVariants:
        from mech_interp.runs.output import is_complete
        from mech_interp.runs.spec import resolve

        from .experiment import analysis_specs

        configs = self._configs(run.options, run.config)
        root = run.model.path
        analyses: dict[str, dict[str, Path | None]] = {}
        criterion = None
        for variant, specs in analysis_specs(configs, run.config).items():
            models: dict = {}  # each checkpoint parsed once for its analyses
            for name, spec in specs.items():
                analysis = resolve(spec, models)
                run_dir = analysis.run_dir(root / "analysis")
                analyses.setdefault(name, {})[variant] = run_dir if is_complete(run_dir) else None
                criterion = analysis.options.criterion
        return TrainedVariants(configs, analyses, criterion)

    def identity(self, experiment: Experiment, options: ComparisonOptions, config: ExperimentConfig,
                 model: TrainingRoot) -> dict[str, Any]:
        configs = self._configs(options, config)
        return {"configs": {v: c.identity() for v, c in configs.items()}, "experiment": asdict(config)}

    def check(self, run: ResolvedRun, seen: set, check_devices: bool = True) -> None:
        from .engine_requirement import require_hooked_transformer

        require_hooked_transformer()
        super().check(run, seen, check_devices)

    def manifest(self, context: TrainedVariants, run: ResolvedRun) -> dict[str, Any]:
        from .engine_requirement import trainer_engine

        base = context.configs[run.config.variants[0]]
        return {"engine": trainer_engine(), "seed": base.seed, "criterion": asdict(context.criterion)}


STUDY = TrainerStudy("trainer", "comparison of trained GPT-2 variants", [
    Experiment("comparison", ExperimentConfig, "train_gpt2_bias.experiment:comparison",
               "per block, default vs attn_bias (or any variants): top-1 and median |a|, attention to the first token "
               "and to the slot, losses; from the trained checkpoints and the analyses run on them"),
])
