"""Experiments as registered functions (after timm's ``@register_model``).

An experiment is a config dataclass plus a function ``(model, options, config) -> ExperimentResult``.
Its dataclass fields become CLI flags and config-file keys, so adding an experiment is one
decorated function and one dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
from transformer_lens import HookedTransformer

from ..detection import MassiveCriterion
from ..errors import UsageError
from ..model_registry import DEFAULT_MODEL


def require_at_least(config: Any, minimum: int, *names: str) -> None:
    """Refuse counts below ``minimum`` with the flag name, so they never reach a reshape or split."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise UsageError(f"--{name.replace('_', '-')} {value!r} is not allowed: expected an integer >= {minimum}")


@dataclass
class RunOptions:
    """Options shared by every experiment: which model, how it is loaded and tokenized."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "registered name, local HF directory, .gguf file or hub name"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    dtype: str = field(default="float32", metadata={"help": "float32, float16 or bfloat16"})
    prepend_bos: bool = field(default=False, metadata={"help": "prepend the BOS token (default: tokenize as the paper, no special tokens)"})
    min_abs: float = field(default=100.0, metadata={"help": "massive: |a| above this"})
    min_ratio: float = field(default=1000.0, metadata={"help": "massive: |a| at least this many times the median |a| of its hidden state"})
    seed: int = field(default=0, metadata={"help": "torch seed set before each run, for experiments that sample (the built-in ones do not; random-init registered models are fixed weights, seed 0)"})

    @property
    def criterion(self) -> MassiveCriterion:
        try:
            return MassiveCriterion(self.min_abs, self.min_ratio)
        except ValueError as err:
            raise UsageError(str(err)) from err


@dataclass
class ExperimentResult:
    tables: dict[str, pd.DataFrame]
    figures: dict[str, Any]
    summary: dict[str, Any]  # JSON-able headline numbers, also stored in the manifest
    lines: list[str]  # human-readable summary printed at the end of a run


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type
    fn: Callable[[HookedTransformer, RunOptions, Any], ExperimentResult]
    doc: str

    def make_config(self, params: dict[str, Any]) -> Any:
        names = [f.name for f in dataclasses.fields(self.config_cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise UsageError(f"unknown parameter {unknown[0]!r} for experiment {self.name!r}: accepted {', '.join(names)}")
        try:
            return self.config_cls(**params)
        except (TypeError, ValueError) as err:
            raise UsageError(f"bad parameters for {self.name!r}: {err}") from err


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(name: str, config_cls: type):
    def decorator(fn):
        if name in _EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        _EXPERIMENTS[name] = Experiment(name, config_cls, fn, (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return decorator


def list_experiments() -> list[str]:
    return list(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    if name not in _EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}: expected one of {', '.join(_EXPERIMENTS)}")
    return _EXPERIMENTS[name]
