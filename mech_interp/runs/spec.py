"""What one run is: an experiment, the shared options and its parameters, and where it is written.

A run's directory is ``<out>/<model>/<experiment>`` followed by ``__key=value`` for every
parameter or option that differs from its default, so reruns with other settings never overwrite
each other. Its ``identity`` is the whole resolved configuration (defaults included): a finished
run counts as done only when its manifest holds the same identity, which for a local model includes the
size and mtime of its files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import studies  # noqa: F401  (registers the experiments)
from ..models.spec import ModelSpec
from .experiments import get_experiment
from .options import RunOptions

_NOT_IN_IDENTITY = {"device", "fast_paths"}  # same values wherever and however it runs (to float tolerance)
_NOT_IN_NAME = _NOT_IN_IDENTITY | {"model"}  # the model names the parent directory


@dataclass
class RunSpec:
    experiment: str
    options: RunOptions = field(default_factory=RunOptions)
    params: dict[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False)  # where it was asked for (a batch file entry), for messages

    def config(self):
        return get_experiment(self.experiment).make_config(self.params)

    def model_spec(self) -> ModelSpec:
        return ModelSpec.parse(self.options.model)

    def name(self) -> str:
        config = self.config()
        parts = [self.experiment]
        for obj in (self.options, config):
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                if f.name not in _NOT_IN_NAME and value != default:
                    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
                    parts.append(f"{f.name}={_safe(text)}")
        return "__".join(parts)

    def run_dir(self, out: str | Path) -> Path:
        return Path(out) / self.model_spec().slug / self.name()

    def identity(self) -> dict[str, Any]:
        """Everything that determines the run's numbers, defaults included."""
        options = {k: v for k, v in asdict(self.options).items() if k not in _NOT_IN_IDENTITY}
        model = self.model_spec()
        options["model"] = model.source
        files = model.fingerprint()
        if files is not None:  # absent for named models, so their earlier runs stay done
            options["model_files"] = files  # a model file replaced in place makes the run stale
        return {"experiment": self.experiment, "options": options, "config": asdict(self.config())}


def _safe(text: str) -> str:
    clean = "".join(c if c.isascii() and (c.isalnum() or c in "-_.,=") else "-" for c in text)
    if len(clean) <= 40 and clean == text:
        return clean
    # a path or anything not name-safe: a readable stub plus a hash of the exact text, stable across processes
    return clean[-24:].lstrip("-.") + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
