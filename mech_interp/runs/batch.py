"""Batch reruns from a TOML or YAML file: models x experiments x layers, resumable.

    [defaults]            # RunOptions fields for every run (device, dtype, prepend_bos, ...)
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

from ..errors import UsageError, first_sentence
from ..user_files import decode_utf8, parse_nested, require_file
from .experiments import get_experiment
from .options import RunOptions
from .runner import check_runs, identity_difference
from .spec import RunSpec

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


def _options(values: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise _malformed(path, f"{where} must be a table")
    names = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise _malformed(path, f"unknown option {unknown[0]!r} in {where} (accepted: {', '.join(sorted(names))})")
    return values


def expand(path: str | Path, check_devices: bool = True) -> list[RunSpec]:
    """Every run the config file asks for, validated, in file order (the devices too, unless the
    runs go to other machines)."""
    path = Path(path)
    data = read_config(path)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise _malformed(path, f"unknown key {unknown[0]!r} (accepted: {', '.join(sorted(TOP_KEYS))})")
    defaults = _options(data.get("defaults", {}), path, "defaults")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise _malformed(path, "needs at least one [[runs]] entry")
    specs = []
    for i, entry in enumerate(entries):
        where = f"runs[{i}]"
        if not isinstance(entry, dict):
            raise _malformed(path, f"{where} must be a table")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise _malformed(path, f"unknown key {unknown[0]!r} in {where} (accepted: {', '.join(sorted(ENTRY_KEYS))})")
        models = _list(entry.get("models", [RunOptions.model]), path, f"{where}.models")
        experiments = _list(entry.get("experiments"), path, f"{where}.experiments")
        layers = _list(entry["layers"], path, f"{where}.layers") if "layers" in entry else [None]
        params = entry.get("params", {})
        if not isinstance(params, dict):
            raise _malformed(path, f"{where}.params must be a table")
        options = {**defaults, **_options(entry.get("options", {}), path, f"{where}.options")}
        accepted = {str(name): {f.name for f in dataclasses.fields(get_experiment(str(name)).config_cls)} for name in experiments}
        if "layers" in entry:
            # Checked even where no experiment of the entry takes a layer: a typo must not pass silently.
            bad = [v for v in layers if isinstance(v, bool) or not isinstance(v, int) or v < 0]
            if bad:
                raise _malformed(path, f"{where}.layers: {bad[0]!r} is not a 0-based block index (an integer >= 0)")
            if not any("layer" in fields for fields in accepted.values()):
                raise _malformed(path, f"{where}.layers given, but none of {', '.join(accepted)} takes a layer")
            if "layer" in params:
                raise _malformed(path, f"{where}: both layers and params.layer given: name the layers once")
        stray = sorted(set(params) - set().union(*accepted.values()))
        if stray:
            raise _malformed(path, f"{where}.params: {stray[0]!r} is not a parameter of {', '.join(accepted)}")
        for model in models:
            for name in experiments:
                fields = accepted[str(name)]
                for layer in (layers if "layer" in fields else [None]):
                    run_params = {k: v for k, v in params.items() if k in fields}
                    if layer is not None:
                        run_params["layer"] = layer
                    if not isinstance(model, str) or not isinstance(name, str):
                        raise _malformed(path, f"{where}: models and experiments are names (strings), got "
                                               f"{model if not isinstance(model, str) else name!r}")
                    try:
                        spec = RunSpec(name, RunOptions(**{**options, "model": model}), run_params,
                                       origin=f"{path} {where}")
                        spec.config()  # validates parameter names and values now, not mid-batch
                    except UsageError as err:
                        raise _malformed(path, f"{where}: {err}") from err
                    specs.append(spec)
    check_runs(specs, check_devices)  # models, layers, texts, devices: every run before the first starts
    unique_runs(specs)  # two configurations for one run directory: the second would replace the first
    return specs


def unique_runs(specs: list[RunSpec]) -> list[RunSpec]:
    """The runs with distinct run directories: a second run of the same computation is dropped (it
    would be skipped as done), one that would write another configuration there is refused."""
    seen: dict[Path, RunSpec] = {}
    for spec in specs:
        first = seen.setdefault(spec.run_dir(Path()), spec)
        if first is not spec and first.identity() != spec.identity():
            raise UsageError(f"{first.origin or 'a run'} and {spec.origin or 'another'} both write "
                             f"<out>/{spec.run_dir(Path())} ({identity_difference(first.identity(), spec.identity())}): "
                             "give the models distinct file names, or split the batch over two --out directories")
    return list(seen.values())
