"""What a study declares to the engine, and the engine's side of it.

A study is a set of experiments that share one kind of model context and one options dataclass
(the language-model and head studies share ``RunOptions`` and a ``ModelContext``; the vision study
``ViTOptions`` and a ``Session``). It declares:

- its experiments (``Experiment``: config dataclass, function target, doc), in the order ``study``
  runs ``default_runs`` of them, and which of those may be skipped (``optional_runs``);
- its options dataclass and its model: ``resolve_model`` parses the model string once, with
  everything known without loading weights (a ``ResolvedModel``); ``open`` loads a context from
  it; ``load_key`` says which runs can share one loaded context;
- its checks before anything loads (``check``) and after (``check_loaded``), the identity and the
  manifest fields of a run, the local files a Ray node must see, and what a run asks a scheduler for.

The engine (``resolve``, ``runner``, ``batch``, ``ray_backend``) reads only this interface; the
registry (``studies.py``) names each study by module, imported when used.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..validation.errors import UsageError
from .experiment import Experiment


class ResolvedModel(Protocol):
    """A model string parsed once: what names its results directory and what it is, independent of the cwd."""

    @property
    def slug(self) -> str: ...

    @property
    def source(self) -> str: ...


@dataclass(frozen=True)
class ResolvedRun:
    """One run, resolved once before anything runs: what the runner, the manifest, the Ray backend and the
    skip/resume logic read. ``model`` is None for an experiment that loads no model."""

    study: "Study"
    experiment: Experiment
    options: Any  # the study's options dataclass
    config: Any  # the experiment's config dataclass
    model: Any  # ResolvedModel | None
    name: str  # the run directory's name
    slug: str  # the model directory's name
    identity: dict[str, Any] = field(compare=False)  # everything that determines the numbers
    origin: str = ""  # where it was asked for (a batch file entry), for messages
    spec: Any = field(default=None, compare=False)  # the RunSpec it came from: what a Ray node resolves again

    def run_dir(self, out: str | Path) -> Path:
        return Path(out) / self.slug / self.name

    @property
    def location(self) -> str:
        """``<model>/<run>``: the run directory under any results root."""
        return f"{self.slug}/{self.name}"


class Study:
    """Subclassed once per kind of model (the TransformerLens language models, the timm ViTs); instantiated once
    per study with its experiments."""

    options_cls: type = object
    layer_field: str = "layer"  # the config field a batch entry's ``layers`` fills
    not_in_identity: frozenset[str] = frozenset()  # options that change where or how fast, not what is computed
    not_in_name: frozenset[str] = frozenset({"model"})  # the model names the parent directory

    def __init__(self, name: str, title: str, experiments: list[Experiment], default_runs: tuple[str, ...] = (),
                 optional_runs: tuple[str, ...] = ()):
        self.name = name
        self.title = title  # "massive-activation study": the first line a study command prints
        self.experiments = {e.name: e for e in experiments}
        self.default_runs = default_runs or tuple(self.experiments)  # what ``study`` runs, in order
        self.optional_runs = frozenset(optional_runs)  # a refused input skips them in ``study`` (optional data)

    def experiment(self, name: str) -> Experiment:
        key = name.replace("-", "_")
        if key not in self.experiments:
            raise UsageError(f"unknown experiment {name!r}: expected one of {', '.join(self.experiments)}")
        return self.experiments[key]

    # -- the model: parsed once, loaded when a run needs it

    def resolve_model(self, options: Any) -> ResolvedModel:
        raise NotImplementedError

    def model_key(self, options: Any) -> tuple:
        """What decides the resolved model: runs with equal keys share one ``resolve_model``."""
        return (options.model,)

    def model_free_slug(self, experiment: Experiment) -> str:
        """The results directory of an experiment that loads no model."""
        raise NotImplementedError

    def open(self, run: ResolvedRun) -> Any:
        """The loaded model context every experiment of the study takes."""
        raise NotImplementedError

    def load_key(self, options: Any) -> tuple:
        """Runs with equal keys can share one loaded context."""
        raise NotImplementedError

    def reuse(self, context: Any, run: ResolvedRun) -> Any:
        """The loaded ``context`` (of a run with the same load key) for ``run``, updated where the run needs it, or
        None to open another: what the options alone do not decide (a placement chosen per run) may differ."""
        return context

    # -- checks

    def check(self, run: ResolvedRun, seen: set, check_devices: bool = True) -> None:
        """Refuse, before anything loads, what would fail on this run's input. ``seen`` holds what an earlier run
        of the same command checked already (a text, a device), so each is checked once."""

    def check_loaded(self, context: Any, run: ResolvedRun) -> None:
        """What only the loaded model can tell."""

    # -- identity and provenance

    def identity(self, experiment: Experiment, options: Any, config: Any, model: Any) -> dict[str, Any]:
        raise NotImplementedError

    def manifest(self, context: Any, run: ResolvedRun) -> dict[str, Any]:
        """The study's fields of a run's manifest (model description, conventions); ``context`` is None for a run
        that loads no model."""
        return {}

    def model_lines(self) -> list[str]:
        """One line per registered model of the study's kind: what ``<command> models`` prints."""
        return []

    def computation(self, identity: dict[str, Any]) -> dict[str, Any]:
        """``identity`` without what may differ between machines computing the same thing (where a local file
        lies, its modification time): a Ray node must compute the driver's ``computation``."""
        return identity

    def context_from(self, model: Any, run: ResolvedRun) -> Any:
        """The context of an already loaded ``model`` (a notebook passing its own to ``execute(..., model=)``)."""
        raise UsageError(f"study {self.name!r} runs on its own contexts: pass contexts=, not model=")

    def local_inputs(self, run: ResolvedRun) -> dict[str, int | None]:
        """Local files the run reads, as given, with their size (None for a directory): every Ray node must see them."""
        return {}

    def weight_bytes(self, run: ResolvedRun) -> int | None:
        """The run's weights in memory, known before loading; None when unknown (a hub model)."""
        return None

    def on_device(self, options: Any, device: str) -> Any:
        """``options`` with the device a Ray worker was given."""
        return dataclasses.replace(options, device=device)

    # -- naming

    def run_name(self, experiment: Experiment, options: Any, config: Any) -> str:
        """``<experiment>`` then ``__key=value`` for every option and parameter that differs from its default, so
        runs with other settings never overwrite each other."""
        parts = [experiment.name]
        objects = (options, config) if experiment.needs_model else (config,)
        for obj in objects:
            skip = self.not_in_name | self.not_in_identity if obj is options else set()
            parts += non_defaults(obj, skip)
        return "__".join(parts)


def non_defaults(obj: Any, skip: set[str] | frozenset[str]) -> list[str]:
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if f.name not in skip and value != default:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{f.name}={name_safe(text)}")
    return parts


def name_safe(text: str) -> str:
    clean = "".join(c if c.isascii() and (c.isalnum() or c in "-_.,=") else "-" for c in text)
    if len(clean) <= 40 and clean == text:
        return clean
    # a path or anything not name-safe: a readable stub plus a hash of the exact text, stable across processes
    return clean[-24:].lstrip("-.") + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
