"""Batch reruns from a TOML or YAML file: models x experiments x layers, resumable. One format for
every study (``mech-interp batch``: the language-model and head experiments; ``vit-hooks batch``:
the vision experiments, whose ``layers`` fill ``block``).

    [defaults]            # the study's options for every run (device, dtype, prepend_bos, ...)
    device = "cpu"

    [[runs]]
    models = ["smollm2-135m"]
    experiments = ["feature_view", "attention"]
    layers = [5, 11]      # optional: one run per layer for experiments that take one
    params = { prompt = "Summer is warm. Winter is cold." }   # optional experiment parameters
    options = { prepend_bos = true }                          # optional per-entry options

    [ray]                 # optional, for --backend ray only (see runs/ray_backend.py)
    results = "driver"    # or "shared": --out is a path every Ray node mounts
    resources = { "smollm2-135m" = { num_gpus = 1, memory_gb = 4 } }

Finished runs are skipped (their manifest holds the same configuration), so rerunning the same
command after a kill resumes where it stopped. Every run of the file is checked (values and their
types, models, layers, texts, devices) before the first one starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import yaml

from ..storage.user_files import decode_utf8, parse_nested, require_file
from ..validation.errors import UsageError, first_sentence
from .runner import check_runs, identity_difference
from .spec import RunSpec, resolve
from .studies import DEFAULT_STUDIES, find_experiment, get_study
from .study import ResolvedRun

ENTRY_KEYS = {"models", "experiments", "layers", "params", "options"}
TOP_KEYS = {"defaults", "runs", "ray"}  # [ray]: read by the Ray backend (ray_backend.read_ray_settings)


class _DuplicateKey(ValueError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the
    last silently; TOML refuses it), so a second ``runs:`` cannot drop the first."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in keys:
                raise _DuplicateKey(f"key {key!r} is given twice (line {key_node.start_mark.line + 1})")
            keys.add(key)
        return super().construct_mapping(node, deep)


def _malformed(path: Path, why: str) -> UsageError:
    return UsageError(f"malformed config file {str(path)!r}: {why}")


def read_config(path: str | Path) -> dict[str, Any]:
    path = require_file(Path(path), "config file", "a .toml, .yaml or .yml file")
    text = decode_utf8(path.read_bytes(), f"malformed config file {str(path)!r}:", "save it as UTF-8")
    try:
        if path.suffix == ".toml":
            data = parse_nested(tomllib.loads, text, f"config file {str(path)!r}")
        elif path.suffix in (".yaml", ".yml"):
            data = parse_nested(lambda t: yaml.load(t, Loader=_StrictLoader), text, f"config file {str(path)!r}")
        else:
            raise UsageError(f"config file {str(path)!r} has suffix {path.suffix!r}: expected .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, _DuplicateKey) as err:
        raise _malformed(path, first_sentence(str(err))) from err
    if not isinstance(data, dict):
        raise _malformed(path, "expected a table with 'runs'")
    return data


def _list(value: Any, path: Path, where: str) -> list:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list) or not value:
        raise _malformed(path, f"{where} must be a non-empty list")
    return value


def _options(values: dict[str, Any], options_cls: type, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise _malformed(path, f"{where} must be a table")
    names = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise _malformed(path, f"unknown option {unknown[0]!r} in {where} (accepted: {', '.join(sorted(names))})")
    return values


def expand(path: str | Path, studies: tuple[str, ...] | None = None, check_devices: bool = True) -> list[ResolvedRun]:
    """Every run the config file asks for, resolved and checked, in file order (the devices too, unless the
    runs go to other machines). Experiment names are looked up in ``studies`` (default: mech-interp's);
    the runs of one file share one options dataclass (``[defaults]`` and ``options`` fill it)."""
    path = Path(path)
    data = read_config(path)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise _malformed(path, f"unknown key {unknown[0]!r} (accepted: {', '.join(sorted(TOP_KEYS))})")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise _malformed(path, "needs at least one [[runs]] entry")
    options_cls = get_study((studies or DEFAULT_STUDIES)[0]).options_cls
    defaults = _options(data.get("defaults", {}), options_cls, path, "defaults")
    models_seen: dict[tuple, Any] = {}  # each model parsed once for the whole file
    runs = []
    for i, entry in enumerate(entries):
        where = f"runs[{i}]"
        if not isinstance(entry, dict):
            raise _malformed(path, f"{where} must be a table")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise _malformed(path, f"unknown key {unknown[0]!r} in {where} (accepted: {', '.join(sorted(ENTRY_KEYS))})")
        models = _list(entry.get("models", [options_cls().model]), path, f"{where}.models")
        experiments = _list(entry.get("experiments"), path, f"{where}.experiments")
        layers = _list(entry["layers"], path, f"{where}.layers") if "layers" in entry else [None]
        params = entry.get("params", {})
        if not isinstance(params, dict):
            raise _malformed(path, f"{where}.params must be a table")
        options = {**defaults, **_options(entry.get("options", {}), options_cls, path, f"{where}.options")}
        found = {}
        for name in experiments:
            if not isinstance(name, str):
                raise _malformed(path, f"{where}: models and experiments are names (strings), got {name!r}")
            try:
                found[name] = find_experiment(name, studies)
            except UsageError as err:
                raise _malformed(path, f"{where}: {err}") from err
        accepted = {name: experiment.parameters for name, (_, experiment) in found.items()}
        layer_field = {name: study.layer_field for name, (study, _) in found.items()}
        if "layers" in entry:
            # Checked even where no experiment of the entry takes a layer: a typo must not pass silently.
            bad = [v for v in layers if isinstance(v, bool) or not isinstance(v, int) or v < 0]
            if bad:
                raise _malformed(path, f"{where}.layers: {bad[0]!r} is not a 0-based block index (an integer >= 0)")
            if not any(layer_field[name] in fields for name, fields in accepted.items()):
                raise _malformed(path, f"{where}.layers given, but none of {', '.join(accepted)} takes a layer")
            if any(layer_field[name] in params for name in accepted):
                raise _malformed(path, f"{where}: both layers and params.{layer_field[experiments[0]]} given: "
                                       "name the layers once")
        stray = sorted(set(params) - set().union(*accepted.values()))
        if stray:
            raise _malformed(path, f"{where}.params: {stray[0]!r} is not a parameter of {', '.join(accepted)} "
                                   f"(accepted: {', '.join(sorted(set().union(*accepted.values())))})")
        for model in models:
            if not isinstance(model, str):
                raise _malformed(path, f"{where}: models and experiments are names (strings), got {model!r}")
            for name in experiments:
                study, experiment = found[name]
                fields = accepted[name]
                for layer in (layers if layer_field[name] in fields else [None]):
                    run_params = {k: v for k, v in params.items() if k in fields}
                    if layer is not None:
                        run_params[layer_field[name]] = layer
                    try:  # the file's own values: a malformed file
                        run_options = options_cls(**{**options, "model": model})
                        experiment.make_config(run_params)
                    except UsageError as err:
                        raise _malformed(path, f"{where}: {err}") from err
                    # what they name (a model that does not load, ...): said with the entry that names it
                    runs.append(resolve(RunSpec(experiment.name, run_options, run_params, f"{path} {where}", study.name),
                                        models_seen))
    check_runs(runs, check_devices)  # models, layers, texts, devices: every run before the first starts
    return unique_runs(runs)  # two configurations for one run directory: the second would replace the first


def unique_runs(runs: list[ResolvedRun]) -> list[ResolvedRun]:
    """The runs with distinct run directories: a second run of the same computation is dropped (it
    would be skipped as done), one that would write another configuration there is refused."""
    seen: dict[str, ResolvedRun] = {}
    for run in runs:
        first = seen.setdefault(run.location, run)
        if first is not run and first.identity != run.identity:
            raise UsageError(f"{first.origin or 'a run'} and {run.origin or 'another'} both write "
                             f"<out>/{run.location} ({identity_difference(first.identity, run.identity)}): "
                             "give the models distinct file names, or split the batch over two --out directories")
    return list(seen.values())
