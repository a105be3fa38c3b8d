"""The subcommands every study's command line has, built from the study registry: one per experiment
(flags from its options and config dataclasses), ``study`` (its default runs on one model) and
``batch`` (a TOML/YAML file, locally or on Ray). ``mech-interp`` and ``vit-hooks`` differ only in
which studies they serve. Imports no torch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..runs.studies import get_study
from ..validation.errors import UsageError
from .flags import add_fields, collect


def say(line: str) -> None:
    """A study command's progress line, flushed at once (progress bars write to stderr in between)."""
    print(line, flush=True)


def add_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results", help="results root (default: results)")
    p.add_argument("--force", action="store_true", help="rerun even if the run directory is complete")
    add_figure_format(p)


def add_figure_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--figure-format", default=None,
                   help="static copies of every figure beside its HTML: png, svg, pdf (comma-separated) or none; "
                        "PNG at 300 dpi for 11 inches, SVG and PDF vector (default: png)")


def add_engine_commands(sub, studies: tuple[str, ...], example: str) -> None:
    """One subcommand per experiment of ``studies``, ``batch`` and ``models``."""
    add_experiment_commands(sub, studies)
    add_batch_command(sub, example)
    sub.add_parser("models", help="list the registered models")


def run_engine_command(ns: argparse.Namespace, studies: tuple[str, ...], report: Callable[[str], None]) -> int | None:
    """``models``, ``batch`` or one experiment; the ``--out`` of the last two is checked before anything is read."""
    from ..runs.output import check_writable

    if ns.command == "models":
        print("\n".join(get_study(studies[0]).model_lines()))
        return None
    check_writable(ns.out)
    if ns.command == "batch":
        return run_batch_command(ns, studies)
    run_single(ns, report)
    return None


def is_engine_command(ns: argparse.Namespace) -> bool:
    return ns.command in ("batch", "models") or hasattr(ns, "experiment")


def add_experiment_commands(sub, studies: tuple[str, ...]) -> None:
    for study in map(get_study, studies):
        for experiment in study.experiments.values():
            p = sub.add_parser(experiment.name.replace("_", "-"), help=experiment.doc)
            if experiment.needs_model:
                add_fields(p, study.options_cls)
            add_out(p)
            add_fields(p, experiment.config_cls)
            p.set_defaults(experiment=experiment.name, study=study.name)


def add_batch_command(sub, example: str) -> None:
    batch = sub.add_parser("batch", help="run every entry of a TOML/YAML config file; resumable")
    batch.add_argument("config", type=Path, help=f"a .toml, .yaml or .yml file (see {example})")
    add_out(batch)
    batch.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local (default): one run after another in this process; ray: each run a Ray task "
                            "(needs the [ray] extra; see the batch file's [ray] table)")
    batch.add_argument("--address", default=None,
                       help="ray only: auto (a running cluster), HOST:PORT or ray://HOST:PORT (default: a local Ray on this machine)")
    batch.add_argument("--max-retries", type=int, default=None,
                       help="ray only: times a task is retried after its worker dies (default 0)")


def options_from(ns: argparse.Namespace, study_name: str) -> Any:
    study = get_study(study_name)
    return study.options_cls(**collect(ns, study.options_cls))


def run_single(ns: argparse.Namespace, report: Callable[[str], None]) -> None:
    from ..runs.runner import check_runs, execute, status_line
    from ..runs.spec import RunSpec, resolve

    study = get_study(ns.study)
    experiment = study.experiment(ns.experiment)
    options = options_from(ns, ns.study) if experiment.needs_model else study.options_cls()
    run = resolve(RunSpec(experiment.name, options, collect(ns, experiment.config_cls), study=study.name))
    check_runs([run])
    run_dir, result = execute(run, ns.out, force=ns.force, report=report)
    report(status_line(run_dir, result))
    print((run_dir / "summary.txt").read_text(), end="")


def run_default_study(study_name: str, options: Any, params: dict[str, dict[str, Any]], out: str, force: bool,
                      report: Callable[[str], None]) -> None:
    from ..runs.output import check_writable
    from ..runs.runner import run_study
    from ..runs.spec import RunSpec, resolve

    check_writable(out)  # before the models, the texts or the images are read
    study = get_study(study_name)
    models: dict[tuple, Any] = {}
    runs = [resolve(RunSpec(name, options, params.get(name, {}), study=study.name), models)
            for name in study.default_runs]
    run_study(study, runs, out, force, report)


def run_batch_command(ns: argparse.Namespace, studies: tuple[str, ...]) -> int | None:
    if ns.backend == "ray":
        from ..runs.ray_backend import run_batch_on_ray

        return run_batch_on_ray(ns.config, ns.out, ns.force, ns.address,
                                0 if ns.max_retries is None else ns.max_retries, studies)
    for flag, value in (("--address", ns.address), ("--max-retries", ns.max_retries)):
        if value is not None:
            raise UsageError(f"{flag} is for --backend ray; this batch runs locally (--backend local)")
    from ..runs.batch import expand, read_config
    from ..runs.runner import run_batch

    runs = expand(ns.config, studies)
    if "ray" in read_config(ns.config):
        print(f"note: the [ray] table of {ns.config} applies to --backend ray only")
    done, skipped = run_batch(runs, ns.out, ns.force)
    print(f"{len(runs)} runs: {done} run now, {skipped} already complete")
    return None
