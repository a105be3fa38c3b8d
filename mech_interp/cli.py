"""``mech-interp``: the language-model study from the command line.

    mech-interp study                      # all four experiments on the embedded default model
    mech-interp study heads                # the head study: who reads, writes and removes the massive activation
    mech-interp layerwise --model random:gpt2-tiny --n-seqs 4
    mech-interp batch runs.toml            # many runs, resumable
    mech-interp batch runs.toml --backend ray [--address auto]   # each run a Ray task
    mech-interp report results             # a static HTML site of everything under results/

Layers are 0-based TransformerLens blocks: ``--layer L`` means ``blocks.L.hook_resid_post``.
Bad input prints one line to stderr and exits with status 2, before anything is written; every run
of a study or batch is checked before the first starts. Ctrl-C prints one line and exits with 130,
keeping finished runs and resumable pieces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from .command import OneLineParser, parse, run_command
from .errors import UsageError
from .flags import add_fields, collect
from .report.command import add_report_parser, report_main

STUDIES = ("lm", "heads")  # mech_interp.studies.<name>.STUDY lists each one's experiments


def build_parser() -> argparse.ArgumentParser:
    from .runs.experiments import get_experiment, list_experiments
    from .runs.options import RunOptions
    from .runs.spec import RunSpec  # noqa: F401  (registers the experiments)

    parser = OneLineParser(prog="mech-interp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    def common(p: argparse.ArgumentParser) -> None:
        add_fields(p, RunOptions)
        p.add_argument("--out", default="results", help="results root (default: results)")
        p.add_argument("--force", action="store_true", help="rerun even if the run directory is complete")

    study = sub.add_parser("study", help="all four experiments (the main job); 'study heads': the head study's six")
    study.add_argument("which", nargs="?", choices=STUDIES, default="lm",
                       help="lm (default): the paper's four experiments; heads: head scores, ablations, attribution")
    common(study)
    study.add_argument("--layerwise-n-seqs", type=int, default=None, help="sequences for the layer-wise statistics")
    study.add_argument("--n-windows", type=int, default=None, help="perplexity windows per dataset (0 = all)")
    study.add_argument("--datasets", default=None, help="perplexity datasets, comma-separated")
    for name in list_experiments():
        experiment = get_experiment(name)
        p = sub.add_parser(name.replace("_", "-"), help=experiment.doc)
        common(p)
        add_fields(p, experiment.config_cls)
        p.set_defaults(experiment=name)
    batch = sub.add_parser("batch", help="run every entry of a TOML/YAML config file; resumable")
    batch.add_argument("config", type=Path)
    batch.add_argument("--out", default="results", help="results root (default: results)")
    batch.add_argument("--force", action="store_true")
    batch.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local (default): one run after another in this process; ray: each run a Ray task "
                            "(needs the [ray] extra; see the batch file's [ray] table)")
    batch.add_argument("--address", default=None,
                       help="ray only: auto (a running cluster), HOST:PORT or ray://HOST:PORT (default: a local Ray on this machine)")
    batch.add_argument("--max-retries", type=int, default=None,
                       help="ray only: times a task is retried after its worker dies (default 0)")
    sub.add_parser("models", help="list the registered models")
    add_report_parser(sub)
    return parser


def _report(line: str) -> None:
    print(line, flush=True)


def _status(run_dir: Path, result) -> str:
    return f"[done] {run_dir}" if result is not None else f"[skip] {run_dir} is complete (use --force to rerun)"


def _print_result(run_dir: Path, result) -> None:
    print(_status(run_dir, result))
    print((run_dir / "summary.txt").read_text(), end="")


def _study(ns: argparse.Namespace) -> None:
    import importlib

    from .errors import NothingToMeasure
    from .runs.options import RunOptions
    from .runs.runner import check_runs, execute, model_for
    from .runs.spec import RunSpec

    experiments = importlib.import_module(f"mech_interp.studies.{ns.which}").STUDY
    options = RunOptions(**collect(ns, RunOptions))
    if ns.which != "lm":
        for flag, value in (("--layerwise-n-seqs", ns.layerwise_n_seqs), ("--n-windows", ns.n_windows), ("--datasets", ns.datasets)):
            if value is not None:
                raise UsageError(f"{flag} belongs to the lm study, not to 'study {ns.which}': run the experiment alone "
                                 f"(mech-interp --help lists them) to change its parameters")
    options.criterion  # validate before loading anything
    params = {
        "layerwise": {"n_seqs": ns.layerwise_n_seqs} if ns.layerwise_n_seqs is not None else {},
        "intervention": {k: v for k, v in {
            "n_windows": ns.n_windows,
            "datasets": [d.strip() for d in ns.datasets.split(",") if d.strip()] if ns.datasets else None}.items() if v is not None},
    }
    specs = [RunSpec(name, options, params.get(name, {})) for name in experiments]
    check_runs(specs)  # all of them, before the first writes anything
    loaded = {}

    def model():
        if "m" not in loaded:
            loaded["m"] = model_for(options)
        return loaded["m"]

    print(f"massive-activation {'head ' if ns.which == 'heads' else ''}study of {options.model} -> {ns.out}/")
    summaries = []
    for spec in specs:
        try:
            run_dir, result = execute(spec, ns.out, model, force=ns.force, report=_report)
        except NothingToMeasure as err:  # the other experiments still say something about the model
            print(f"[skip] {spec.experiment}: {err}")
            summaries.append(f"{spec.experiment}: not run: {err}")
            continue
        print(_status(run_dir, result))
        summaries.append(f"{(run_dir / 'summary.txt').read_text().rstrip()}\n  -> {run_dir}")
    # Progress bars scroll the per-experiment results away; the study ends with all of them together.
    print(f"\n=== summary: {options.model} ===")
    print("\n\n".join(summaries))


def _single(ns: argparse.Namespace) -> None:
    from .runs.experiments import get_experiment
    from .runs.options import RunOptions
    from .runs.runner import check_runs, execute
    from .runs.spec import RunSpec

    options = RunOptions(**collect(ns, RunOptions))
    options.criterion
    spec = RunSpec(ns.experiment, options, collect(ns, get_experiment(ns.experiment).config_cls))
    check_runs([spec])
    _print_result(*execute(spec, ns.out, force=ns.force, report=_report))


def _batch(ns: argparse.Namespace) -> int | None:
    if ns.backend == "ray":
        from .runs.ray_backend import run_batch_on_ray

        return run_batch_on_ray(ns.config, ns.out, ns.force, ns.address, 0 if ns.max_retries is None else ns.max_retries)
    for flag, value in (("--address", ns.address), ("--max-retries", ns.max_retries)):
        if value is not None:
            raise UsageError(f"{flag} is for --backend ray; this batch runs locally (--backend local)")
    from tqdm.auto import tqdm

    from .runs.batch import expand, read_config
    from .runs.runner import execute, load_key, model_for

    specs = expand(ns.config)
    if "ray" in read_config(ns.config):
        print(f"note: the [ray] table of {ns.config} applies to --backend ray only")
    cache: dict[tuple, Any] = {}
    done = skipped = 0
    for spec in tqdm(specs, desc="runs", unit="run"):
        o = spec.options
        key = load_key(o)

        def model(key=key, o=o):
            if key not in cache:
                cache.clear()  # one model in memory at a time
                cache[key] = model_for(o)
            return cache[key]

        run_dir, result = execute(spec, ns.out, model, force=ns.force, report=tqdm.write)
        done, skipped = done + (result is not None), skipped + (result is None)
        tqdm.write(f"[{'done' if result is not None else 'skip'}] {run_dir}")
    print(f"{len(specs)} runs: {done} run now, {skipped} already complete")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parse(parser, argv)
    if isinstance(ns, int):
        return ns

    def body() -> int | None:
        if ns.command in ("study", "batch") or hasattr(ns, "experiment"):
            from .runs.output import check_writable

            check_writable(ns.out)  # before the config file, the models or the texts are read
        if ns.command == "models":
            from .models.registry import list_models, model_entry

            for name in list_models():
                entry = model_entry(name)
                print(f"{name:<20} {entry.family:<18} {entry.n_layers:>3} layers  {entry.description}")
        elif ns.command == "study":
            _study(ns)
        elif ns.command == "batch":
            return _batch(ns)
        elif ns.command == "report":
            report_main(ns)
        else:
            _single(ns)

    return run_command("mech-interp", body, "finished runs are kept; the same command resumes the rest",
                       getattr(ns, "out", ""))


if __name__ == "__main__":
    sys.exit(main())
