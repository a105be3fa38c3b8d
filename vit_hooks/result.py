"""What a vision experiment returns: ``mech_interp``'s ``ExperimentResult`` (tables, figures, headline
numbers, printed lines) plus files written as they are (e.g. register means in upstream's ``.pt`` format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mech_interp.runs.experiments import ExperimentResult


@dataclass
class ViTResult(ExperimentResult):
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # name -> writer of that file
