"""A series of checkpoints of one model, read and checked before any of them loads, then loaded one at a time.

Where a series comes from:

- a trainer's output directory (``--series DIR``): ``DIR/series/step_<N>/``, each a checkpoint as the trainer exports
  its final model (``hooked_config.json``, ``model.safetensors``, ``tokenizer/``) with ``step.json``, that step's row
  of its log. This layout is the trainer's output format (``train-gpt2-bias train --series-interval N``), read here as
  files: this study never imports the trainer. Other names there (``step_<N>.tmp``, an export a kill cut short) are
  not checkpoints;
- a list (``--models A,B,...``): registered names, local checkpoint or Hugging Face directories and GGUF files, as
  ``--model`` takes them, in the order given; a directory named ``step_<N>`` gives its step. ``NAME@step1000,step2000``
  names revisions of a hub model (Pythia's ``step<N>`` branches; the revisions after the first continue the list
  until an item that is not one), loaded through TransformerLens' checkpoint loader: it needs the hub, and is refused
  in one line without it.

Refused in one line before anything loads: no checkpoint, a path that is not a directory, a checkpoint named twice or
two at one step, checkpoints with different numbers of blocks (the per-block table compares one model over
training), a hub revision that is not ``step<N>``, and a hub model without the hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...models.spec import ModelSpec
from ...storage.user_files import read_json_object
from ...validation.errors import UsageError

SERIES_DIR = "series"
STEP_DIR = re.compile(r"step_(\d+)")
STEP_FILE = "step.json"
HUB_REVISION = re.compile(r"step(\d+)")
RECORDED = ("tokens", "train_loss", "val_loss")  # what the table takes from a checkpoint's step.json


@dataclass(frozen=True)
class SeriesCheckpoint:
    label: str  # how tables and lines name it: step_<N> in a trainer's series, else the spec as given
    step: int | None  # the optimizer step, where its name says it
    spec: ModelSpec | None  # None for a hub revision, which ModelSpec does not describe
    hub_name: str | None = None
    revision: str | None = None
    recorded: dict[str, Any] = field(default_factory=dict)  # RECORDED values of step.json, where it has them

    @property
    def source(self) -> str:
        """What it names, independent of the working directory."""
        return self.spec.source if self.spec is not None else f"{self.hub_name}@{self.revision}"

    @property
    def n_layers(self) -> int | None:
        return self.spec.metadata().n_layers if self.spec is not None else None

    @property
    def n_ctx(self) -> int | None:
        return self.spec.metadata().n_ctx if self.spec is not None else None

    def identity(self) -> dict[str, Any]:
        """What decides its numbers: what it names and, for local files, their size and mtime (a checkpoint written
        again makes its saved row stale)."""
        return {"source": self.source, "files": self.spec.fingerprint() if self.spec is not None else None}


def read_series(series: str, models: list[str] | None) -> list[SeriesCheckpoint]:
    """The checkpoints of ``--series`` or ``--models``, checked (module doc); nothing is loaded."""
    checkpoints = _trainer_series(series) if series.strip() else _model_list(models or [])
    if not checkpoints:
        raise UsageError("empty checkpoint series: give --series DIR (a train-gpt2-bias --out) or --models A,B,...")
    for kind, key in (("checkpoint", lambda c: c.source), ("step", lambda c: c.step)):
        seen: dict[Any, str] = {}
        for checkpoint in checkpoints:
            value = key(checkpoint)
            if value is not None and value in seen:
                raise UsageError(f"the series has {kind} {value} twice ({seen[value]!r} and {checkpoint.label!r}): a "
                                 "series holds one checkpoint per step of one model")
            seen[value] = checkpoint.label
    depths = {c.label: c.n_layers for c in checkpoints if c.n_layers is not None}
    if len(set(depths.values())) > 1:
        (a, n), (b, m) = next(((x, y) for x in depths.items() for y in depths.items() if x[1] != y[1]))
        raise UsageError(f"the checkpoints are not one model's: {a!r} has {n} blocks, {b!r} has {m}: a series "
                         "compares one model over training")
    return checkpoints


def check_hub(checkpoints: list[SeriesCheckpoint]) -> None:
    """Each hub model is one TransformerLens knows, and the hub reachable (or its cache allowed); checked once per
    name, before anything loads."""
    from ...models.hub_names import known_hub_name
    from ...models.loading import check_hub_model
    from ...storage.hub import hub_reachable, offline_mode

    for name in dict.fromkeys(c.spec.text for c in checkpoints if c.spec is not None and c.spec.kind == "hub"):
        check_hub_model(name)
    for name in dict.fromkeys(c.hub_name for c in checkpoints if c.hub_name is not None):
        if not known_hub_name(name):
            raise UsageError(f"unknown hub model {name!r} in --models: expected a model TransformerLens loads with "
                             "its checkpoints, such as EleutherAI/pythia-70m")
        if not offline_mode() and not hub_reachable():
            raise UsageError(f"cannot load the revisions of {name!r}: the Hugging Face hub is unreachable; give the "
                             "checkpoints as local directories to --models (or, with them in your HF cache, set "
                             "HF_HUB_OFFLINE=1)")


def load(checkpoint: SeriesCheckpoint, device: str, dtype: str, prepend_bos: bool):
    """The checkpoint as a HookedTransformer (or a TransformerBridge, as the installed TransformerLens gives)."""
    from ...models.loading import load_model

    if checkpoint.spec is not None:
        return load_model(checkpoint.spec, device=device, dtype=dtype, prepend_bos=prepend_bos)
    from dataclasses import asdict

    from transformer_lens import HookedTransformer

    from ...models.loading import resolve_device, resolve_dtype
    from ...models.processing import Processing

    model = HookedTransformer.from_pretrained(  # TransformerLens' own loader of Pythia's step<N> branches
        checkpoint.hub_name, checkpoint_value=checkpoint.step, device=str(resolve_device(device)),
        dtype=resolve_dtype(dtype), default_prepend_bos=prepend_bos, **asdict(Processing()))
    model.eval()
    return model


def _trainer_series(text: str) -> list[SeriesCheckpoint]:
    root = Path(text).expanduser()
    if not root.exists():
        raise UsageError(f"--series {text!r} does not exist: expected a train-gpt2-bias --out directory")
    if not root.is_dir():
        raise UsageError(f"--series {text!r} is not a directory: expected a train-gpt2-bias --out directory")
    found = sorted(((int(m.group(1)), p) for p in (root / SERIES_DIR).glob("step_*")
                    if (m := STEP_DIR.fullmatch(p.name)) and p.is_dir()), key=lambda item: item[0])
    if not found:
        raise UsageError(f"--series {text!r} holds no checkpoint series ({SERIES_DIR}/step_<N>/): train it with "
                         "train-gpt2-bias train --series-interval N, or give the checkpoints to --models")
    checkpoints = []
    for step, path in found:
        shown = str(Path(text) / SERIES_DIR / path.name)
        spec = ModelSpec.parse(shown)
        if spec.kind != "checkpoint":
            raise UsageError(f"series step {shown!r} is not a trainer checkpoint (no hooked_config.json): remove it, "
                             "or train the series again")
        checkpoints.append(SeriesCheckpoint(path.name, step, spec, recorded=_recorded(path, shown)))
    return checkpoints


def _recorded(path: Path, shown: str) -> dict[str, Any]:
    if not (path / STEP_FILE).is_file():
        return {}
    record = read_json_object(path / STEP_FILE, f"series step {shown!r}")
    return {k: record[k] for k in RECORDED
            if isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)}


def _model_list(models: list[str]) -> list[SeriesCheckpoint]:
    checkpoints: list[SeriesCheckpoint] = []
    hub_name = None  # the hub model whose revisions the items continue
    for item in models:
        if "@" in item and not Path(item).expanduser().exists():
            hub_name, revision = item.rsplit("@", 1)
            checkpoints.append(_revision(hub_name, revision, item))
        elif hub_name is not None and HUB_REVISION.fullmatch(item):
            checkpoints.append(_revision(hub_name, item, f"{hub_name}@{item}"))
        else:
            hub_name = None
            spec = ModelSpec.parse(item)
            step = STEP_DIR.fullmatch(spec.path.name) if spec.path is not None and spec.path.is_dir() else None
            recorded = _recorded(spec.path, item) if step is not None else {}
            checkpoints.append(SeriesCheckpoint(item, int(step.group(1)) if step else None, spec, recorded=recorded))
    return checkpoints


def _revision(hub_name: str, revision: str, label: str) -> SeriesCheckpoint:
    step = HUB_REVISION.fullmatch(revision)
    if not hub_name or step is None:
        raise UsageError(f"--models {label!r} is not allowed: expected a hub model's Pythia-style revisions, "
                         "NAME@step1000,step2000")
    return SeriesCheckpoint(label, int(step.group(1)), None, hub_name, revision)
