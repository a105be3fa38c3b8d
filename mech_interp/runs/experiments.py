"""Experiments registered by name, with metadata readable without importing their code.

An experiment is a config dataclass plus a function ``(model, options, config) -> ExperimentResult``
named by ``"module:function"`` and imported on first use (after timm's registry, whose entries
describe a model without building it). The dataclass fields become CLI flags and config-file keys,
so ``--help`` and batch validation never import torch or TransformerLens.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UsageError


@dataclass
class ExperimentResult:
    tables: dict[str, Any]  # name -> pandas DataFrame
    figures: dict[str, Any]  # name -> plotly Figure
    summary: dict[str, Any]  # JSON-able headline numbers, also stored in the manifest
    lines: list[str]  # human-readable summary printed at the end of a run


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type
    target: str  # "package.module:function", imported on first use
    doc: str

    @property
    def fn(self) -> Callable[..., ExperimentResult]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)

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


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(name: str, config_cls: type, target: str, doc: str) -> Experiment:
    if name in _EXPERIMENTS:
        raise ValueError(f"experiment {name!r} is registered twice")
    _EXPERIMENTS[name] = Experiment(name, config_cls, target, doc)
    return _EXPERIMENTS[name]


def list_experiments() -> list[str]:
    return list(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    if name not in _EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}: expected one of {', '.join(_EXPERIMENTS)}")
    return _EXPERIMENTS[name]

