"""An experiment: a config dataclass plus a function named by ``"module:function"``, imported on first use, and
what it returns.

An experiment function takes the study's loaded model context, its config and, when it declares the
parameter, its resumable ``pieces`` (``fn(context, config, pieces=writer)``), and returns an
``ExperimentResult``; an experiment with ``needs_model=False`` reads only files and is called
``fn(config)``. The dataclass fields become CLI flags and config-file keys, so ``--help`` and batch
validation never import torch, TransformerLens or timm.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..validation.errors import UsageError


@dataclass
class ExperimentResult:
    tables: dict[str, Any]  # name -> pandas DataFrame
    figures: dict[str, Any]  # name -> plotly Figure
    summary: dict[str, Any]  # JSON-able headline numbers, also stored in the manifest
    lines: list[str]  # human-readable summary printed at the end of a run
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # name -> writer of a file in its own format


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type
    target: str  # "package.module:function", imported on first use
    doc: str
    needs_model: bool = True
    # Components (core.sites) it hooks in every block, checked against the loaded model's hook points: an engine
    # that lacks one for a family refuses the run in one line instead of computing something else.
    sites: tuple[str, ...] = ()
    # Where its model may be placed (placement.run_placement): "whole" always; "streamed" when it can run one block's
    # weights at a time.
    placements: tuple[str, ...] = ("whole",)

    @property
    def fn(self) -> Callable[..., ExperimentResult]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)

    def run(self, context: Any, config: Any, pieces: Any = None) -> ExperimentResult:
        """The experiment's result, its figures in the print style (``viz.print_style``) however they are then used:
        written by a run, returned by ``mi.run``, shown in a notebook."""
        from ..viz.print_style import print_style

        fn = self.fn
        if not self.needs_model:
            result = fn(config)
        else:
            kwargs = {"pieces": pieces} if pieces is not None and "pieces" in inspect.signature(fn).parameters else {}
            result = fn(context, config, **kwargs)
        for fig in result.figures.values():
            print_style(fig)
        return result

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

    @property
    def parameters(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.config_cls)}
