"""Batch runs from a TOML file: models x experiments, resumable.

    [defaults]                 # ViTOptions fields for every run (images, n_images, device, ...)
    n_images = 32

    [[runs]]
    models = ["dinov2-vits14-imgfocus", "random:vit-tiny-reg4"]
    experiments = ["layerwise", "attention"]
    params = { k = 2 }         # optional experiment parameters (each must belong to every experiment listed)
    options = { img_size = 224 }   # optional per-entry options

Every run is checked (keys, values and their types, models, images, heads, blocks, devices) before
the first starts; finished runs are skipped, so the same command resumes after a kill. One model is
in memory at a time (runs of the same model and options share it).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, Callable

from mech_interp.errors import UsageError
from mech_interp.user_files import parse_nested, require_file

from .configs import ViTOptions
from .runs import Experiment, check_run, execute, get_experiment

ENTRY_KEYS = {"models", "experiments", "params", "options"}


@dataclasses.dataclass
class BatchRun:
    experiment: Experiment
    options: ViTOptions
    config: Any
    origin: str  # "runs[i]", for messages


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}: accepted {', '.join(sorted(names)) or 'none'}")
    try:
        return cls(**values)
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None


def expand(path: str | Path) -> list[BatchRun]:
    path = require_file(Path(path), "config file", "a .toml file with [[runs]] entries")
    if path.suffix.lower() != ".toml":
        raise UsageError(f"config file {str(path)!r} is not allowed: expected a .toml file")
    try:
        data = parse_nested(tomllib.loads, path.read_text(encoding="utf-8"), f"config file {str(path)!r}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"malformed config file {str(path)!r}: {err}") from None
    unknown = sorted(set(data) - {"defaults", "runs"})
    if unknown or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise UsageError(
            f"malformed config file {str(path)!r}: expected [defaults] and one or more [[runs]]"
            + (f", not {unknown[0]!r}" if unknown else "")
        )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"malformed config file {str(path)!r}: [defaults] must be a table")
    runs = []
    for i, entry in enumerate(data["runs"]):
        where = f"{path.name}: runs[{i}]"
        if not isinstance(entry, dict) or set(entry) - ENTRY_KEYS or not {"models", "experiments"} <= set(entry):
            raise UsageError(f"{where}: expected the keys models and experiments (and optionally params, options)")
        for key in ("models", "experiments"):
            if not isinstance(entry[key], list) or not entry[key] or not all(isinstance(v, str) for v in entry[key]):
                raise UsageError(f"{where}: {key} must be a non-empty list of names")
        for key in ("params", "options"):
            if not isinstance(entry.get(key, {}), dict):
                raise UsageError(f"{where}: {key} must be a table")
        for model in entry["models"]:
            options = _build(ViTOptions, {**defaults, **entry.get("options", {}), "model": model}, where)
            for name in entry["experiments"]:
                experiment = get_experiment(name)
                config = _build(experiment.config_cls, entry.get("params", {}), f"{where}: {experiment.name}")
                runs.append(BatchRun(experiment, options, config, where))
    for run in runs:
        try:
            check_run(run.experiment, run.options, run.config)
        except UsageError as err:
            raise UsageError(f"{run.origin}: {err}") from None
    return runs


def run_batch(path: str | Path, out: str | Path, force: bool, report: Callable[[str], None]) -> tuple[int, int]:
    """(runs done now, runs already complete)."""
    from .session import Session

    runs = expand(path)
    loaded: dict[str, Session] = {}
    done = skipped = 0
    for run in runs:
        key = repr(dataclasses.asdict(run.options))

        def session(key: str = key, options: ViTOptions = run.options) -> Session:
            if key not in loaded:
                loaded.clear()  # one model in memory at a time
                loaded[key] = Session.open(options)
            return loaded[key]

        directory, result = execute(run.experiment, run.options, run.config, out, session, force, report)
        done, skipped = done + (result is not None), skipped + (result is None)
        report(f"[{'done' if result is not None else 'skip'}] {directory}")
    return done, skipped
