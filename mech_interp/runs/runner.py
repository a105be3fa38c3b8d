"""Run resolved runs into their results directories, skipping finished ones: one runner for every study.

``check_runs`` asks each run's study to check it before the first one starts (models, layers,
texts, images, devices: nothing loaded); ``execute`` runs one, checking what needs the loaded model
first; ``run_study`` and ``run_batch`` are the two loops the commands share. A loaded context is
shared by consecutive runs with the same study and load key (``Contexts``), one in memory at a time.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from ..validation.errors import NothingToMeasure, UsageError
from .experiment import ExperimentResult
from .output import WRITE_ERRNOS, RunWriter, check_writable, is_complete, read_manifest, write_error
from .spec import RunSpec, resolve
from .study import ResolvedRun, Study


def __getattr__(name: str) -> Any:
    """Names of 0.1 kept for one release: the language-model engine holds them now."""
    if name == "LAYER_CONVENTION":
        from ..models.language_study import LAYER_CONVENTION

        return LAYER_CONVENTION
    if name == "model_info":
        from ..models.context import ModelContext
        from ..models.run_options import RunOptions

        return lambda model: ModelContext(model, RunOptions()).info()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_runs(runs: Sequence[ResolvedRun], check_devices: bool = True) -> None:
    """Refuse, before anything runs or is written, any run that would fail on its input. Devices are checked
    unless the runs go to other machines (``check_devices=False``), whose devices the scheduler matches."""
    seen: set = set()
    for run in runs:
        try:
            run.study.check(run, seen, check_devices)
        except UsageError as err:
            if run.origin:
                raise UsageError(f"{run.origin}: {err}") from None
            raise


class Contexts:
    """The loaded context of the last study and load key asked for: one model in memory at a time."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._context: Any = None

    def get(self, run: ResolvedRun) -> Any:
        key = (run.study.name, *run.study.load_key(run.options))
        if key == self._key:
            self._context = run.study.reuse(self._context, run)
        if key != self._key or self._context is None:
            self._key, self._context = None, None  # the previous model is freed before the next loads
            self._context = run.study.open(run)
            self._key = key
        return self._context


def run_state(run: ResolvedRun, out: str | Path) -> tuple[str, str]:
    """(``done`` | ``stale`` | ``new``, why): whether a complete run with this identity exists.
    A complete run of another model under the same directory name is refused."""
    run_dir = run.run_dir(out)
    if not is_complete(run_dir):
        return "new", ""
    manifest = read_manifest(run_dir)
    recorded = manifest.get("identity") if isinstance(manifest.get("identity"), dict) else {}
    recorded_options = recorded.get("options") if isinstance(recorded.get("options"), dict) else {}
    if "model_source" in manifest and run.model is not None:  # what the model string named, wherever typed from
        done_source, source = manifest["model_source"], run.model.source
    else:  # a manifest of a version that recorded only the model as typed
        done_source, source = recorded_options.get("model"), run.identity.get("options", {}).get("model")
    if done_source is not None and source is not None and done_source != source:
        raise UsageError(f"{run_dir} holds a run of {done_source!r}, not {source!r}: "
                         "pass another --out, or --force to replace it")
    if manifest.get("identity") == run.identity:
        return "done", ""
    return "stale", identity_difference(recorded, run.identity)


def identity_difference(old: dict, new: dict) -> str:
    for part in sorted(set(old) | set(new), key=lambda p: (p != "experiment", p)):
        a, b = old.get(part), new.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    return f"{part}.{key} was {a.get(key)!r}, now {b.get(key)!r}"
        elif a != b:
            return f"{part} was {a!r}, now {b!r}"
    return "recorded by an older version without its configuration"


def execute(
    run: ResolvedRun | RunSpec,
    out: str | Path,
    contexts: Contexts | None = None,
    force: bool = False,
    report: Callable[[str], None] | None = None,
    provenance: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    model: Any = None,
) -> tuple[Path, ExperimentResult | None]:
    """Run ``run`` unless an identical run is complete (then return ``(dir, None)``).

    ``run`` may be a ``RunSpec``, resolved here. The context comes from ``contexts`` (shared with other
    runs) or is loaded for this run alone, and only when the run is not done. Bad input raises ``UsageError`` before anything is written. A
    complete run whose recorded configuration differs (a default changed since) is rerun, and
    ``report`` is told why: ``[rerun] <dir>: <what changed>``. ``provenance`` adds to the manifest
    (a Ray task records its driver's command line and its node); ``identity`` replaces the run's (a
    Ray task records the driver's, which its skip/resume reads). ``model``: a model already loaded (or a
    zero-argument loader of one) instead of ``contexts``, as notebooks written against 0.1 pass it.
    """
    import torch

    run = run if isinstance(run, ResolvedRun) else resolve(run)
    if contexts is not None and not isinstance(contexts, Contexts):
        model, contexts = contexts, None  # 0.1's third argument: a loaded model or its loader
    run_dir = run.run_dir(out)
    check_writable(out)
    state, why = run_state(run, out) if not force else ("new", "")
    if state == "done":
        return run_dir, None
    if state == "stale" and report is not None:
        report(f"[rerun] {run_dir}: {why}")
    try:
        writer = RunWriter(run_dir, out, identity or run.identity)
    except OSError as err:  # the run directory cannot be made there (read-only, /proc, full, ...): the user's to fix
        raise write_error(err, Path(out)) from None
    try:
        context = None
        if run.experiment.needs_model:
            if model is not None:
                loaded = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
                context = run.study.context_from(loaded, run)
            else:
                context = (contexts or Contexts()).get(run)
            run.study.check_loaded(context, run)
        torch.manual_seed(getattr(run.options, "seed", 0))
        started = time.time()
        result = run.experiment.run(context, run.config, pieces=writer)
        for name, table in result.tables.items():
            writer.table(name, table)
        for name, fig in result.figures.items():
            writer.figure(name, fig)
        for name, write in result.files.items():
            write(writer.partial / name)
            writer.files.append(name)
        writer.text("summary.txt", "\n".join(result.lines) + "\n")
        writer.commit({
            "experiment": run.experiment.name,
            "study": run.study.name,
            "options": asdict(run.options),
            "config": asdict(run.config),
            **({"model_source": run.model.source} if run.model is not None else {}),
            **run.study.manifest(context, run),
            "seconds": round(time.time() - started, 2),
            "summary": result.summary,
            **(provenance or {}),
        })
    except BaseException as err:
        # A kill or Ctrl-C keeps resumable pieces; any other failure leaves nothing behind.
        writer.discard(keep_pieces=isinstance(err, KeyboardInterrupt))
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            raise write_error(err, Path(out)) from None
        raise
    return run_dir, result


def status_line(run_dir: Path, result: ExperimentResult | None) -> str:
    return f"[done] {run_dir}" if result is not None else f"[skip] {run_dir} is complete (use --force to rerun)"


def run_study(study: Study, runs: Sequence[ResolvedRun], out: str | Path, force: bool,
              report: Callable[[str], None]) -> None:
    """Every run of a study on one model (checked first, sharing one context), then their summaries together:
    progress bars scroll the per-experiment results away. A run with nothing to measure, or an optional run
    whose input is missing, is skipped and said so."""
    check_runs(runs)  # all of them, before the first writes anything
    contexts = Contexts()
    model = runs[0].options.model
    report(f"{study.title} of {model} -> {out}/")
    summaries = []
    for run in runs:
        try:
            run_dir, result = execute(run, out, contexts, force=force, report=report)
        except (NothingToMeasure, UsageError) as err:
            if isinstance(err, UsageError) and not isinstance(err, NothingToMeasure) \
                    and run.experiment.name not in study.optional_runs:
                raise
            report(f"[skip] {run.experiment.name}: {err}")
            summaries.append(f"{run.experiment.name}: not run: {err}")
            continue
        report(status_line(run_dir, result))
        summaries.append(f"{(run_dir / 'summary.txt').read_text().rstrip()}\n  -> {run_dir}")
    report(f"\n=== summary: {model} ===")
    report("\n\n".join(summaries))


def run_batch(runs: Sequence[ResolvedRun], out: str | Path, force: bool) -> tuple[int, int]:
    """Every run in this process, one after another; (runs done now, runs already complete)."""
    from tqdm.auto import tqdm

    contexts = Contexts()
    done = skipped = 0
    for run in tqdm(runs, desc="runs", unit="run"):
        run_dir, result = execute(run, out, contexts, force=force, report=tqdm.write)
        done, skipped = done + (result is not None), skipped + (result is None)
        tqdm.write(f"[{'done' if result is not None else 'skip'}] {run_dir}")
    return done, skipped
