"""What a training run leaves in its directory, and how it is read back.

- ``ckpt.pt``: the training state (model, optimizer, step, every process's batch-sampler RNG state as a tensor, the
  log so far, the configuration it belongs to, the training's wall time so far: absent when unknown, as in a state
  of the previous version or one resumed from it), written atomically every ``ckpt_interval`` steps; ``train``
  resumes from it. It holds tensors, numbers, strings and plain lists and dicts only, and is read with
  ``mech_interp.storage.tensor_files.load_tensors`` (``torch.load(weights_only=True)``): a file that needs anything else
  (pickled code) is refused without running it, and any file torch cannot read is refused in one line.
- The model, in the form ``mech_interp`` loads (the "checkpoint" ModelSpec kind, convention 3 of the project):
  ``hooked_config.json`` (HookedTransformerConfig fields, the variant, and ``"format": "train_gpt2_bias",
  "format_version": 1``, which mech_interp's own table maps to ``model.build_model``), ``model.safetensors`` (the
  state dict) and ``tokenizer/``. So ``mech-interp layerwise --model <run dir>`` works on every variant.
- ``series/step_<N>/`` (with ``series_interval``): the model at step N, exported as the final model is (its
  ``hooked_config.json``, ``model.safetensors``, a copy of ``tokenizer/``) plus ``step.json`` (that step's row of the
  log: step, tokens, lr, train_loss, val_loss or null), every ``series_interval`` steps and at the last step. Each is
  written as ``step_<N>.tmp`` and renamed, so a directory by its final name is whole. It is never a resume state: a
  run that starts afresh removes the series, and one that resumes from step S removes the steps after S (a kill left
  them; the resumed steps compute them again, bit for bit), so the series holds each step it passed once.
- ``log.csv``, ``log.json``, ``loss_curve.html`` (and ``.png``), ``plotly.min.js``, ``manifest.json``.

``--out`` must be new, empty, or a directory holding only these (an earlier run, perhaps killed mid-write), each of
its kind (``tokenizer`` and ``series`` directories, the others regular files): a training run's files written into another directory
(a results tree) would hide what is there, and a directory named ``ckpt.pt`` can be neither read nor replaced.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from mech_interp.storage.tensor_files import load_tensors
from mech_interp.storage.user_files import MAX_NESTING, nesting_depth
from mech_interp.validation.errors import UsageError, reason

STATE = "ckpt.pt"
HOOKED_CONFIG = "hooked_config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer"
SERIES = "series"
SERIES_STEP = "step_{step}"  # mech_interp's checkpoint series reader matches this name (step_<N>) and ignores others
STEP_FILE = "step.json"
DIRECTORIES = {TOKENIZER, SERIES}
RUN_FILES = {STATE, HOOKED_CONFIG, WEIGHTS, TOKENIZER, SERIES, "log.csv", "log.json", "loss_curve.html",
             "loss_curve.png", "plotly.min.js", "manifest.json"}
# The types of each entry of a training state ("train_seconds" is absent when unknown: from states of the previous
# version, and from the states of runs that resumed one).
STATE_TYPES = {"model": dict, "optimizer": dict, "step": int, "batch_rng": list, "log": list, "identity": dict,
               "model_config": dict, "train_seconds": float}


def check_out(out: Path) -> None:
    """``out`` can take a training run: absent, or a directory holding nothing but a run's files (module doc)."""
    from mech_interp.runs.output import check_writable

    check_writable(out)
    if not out.is_dir():
        return
    # A write cut short leaves <file>.tmp (ours) or <file>.<pid>.tmp (mech_interp's scratch files).
    entries = {p: re.sub(r"(\.\d+)?\.tmp$", "", p.name) for p in sorted(out.iterdir())}
    foreign = [p.name for p, name in entries.items() if name not in RUN_FILES]
    if foreign:
        shown = ", ".join(map(repr, foreign[:3])) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(f"--out {str(out)!r} is a directory that is not a training run: it holds {shown}, which "
                         "train-gpt2-bias does not write: pass a new or empty directory, or the --out of an earlier "
                         "train run")
    for path, name in entries.items():
        # a link would have the run write through it, to a file or directory outside --out
        if not path.is_symlink() and (path.is_dir() if name in DIRECTORIES else path.is_file()):
            continue
        wanted = "a directory" if name in DIRECTORIES else "a regular file"
        raise UsageError(f"--out {str(out)!r} holds {path.name!r}, which is {_kind(path)}: train-gpt2-bias writes "
                         f"{wanted} by that name (reads, replaces or deletes it): remove it, or pass another --out")


def _kind(path: Path) -> str:
    if path.is_symlink():
        return f"a symbolic link to {str(path.resolve())!r}" if path.exists() else "a broken symbolic link"
    if path.is_dir():
        return "a directory"
    return "a regular file" if path.is_file() else "neither a regular file nor a directory"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_state(out: Path, state: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / STATE, lambda p: torch.save(state, p))


AGAIN = "pass --no-resume to start over (it is deleted), or another --out"


def _not_a_state(path: Path, why: str) -> UsageError:
    return UsageError(f"{str(path)!r} is not a training state this trainer wrote ({why}): {AGAIN}")


def load_state(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved training state of ``out`` when its configuration equals ``identity``; None when there is none.
    A file that is not such a state, or a state of another configuration, is refused (resuming it would mix two
    runs)."""
    path = out / STATE
    if not path.is_file():
        return None
    state = load_tensors(path, "training state", f"a training state this trainer wrote: {AGAIN}")
    if not isinstance(state, dict):
        raise _not_a_state(path, f"it holds a {type(state).__name__}")
    for key, kind in STATE_TYPES.items():
        if key == "train_seconds" and key not in state:
            continue
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise _not_a_state(path, f"its {key!r} is {type(state.get(key)).__name__}, not {kind.__name__}")
    if nesting_depth(state["identity"])[0] > MAX_NESTING:  # no identity of ours is; json.dumps would recurse past the stack
        raise _not_a_state(path, f"its 'identity' nests deeper than {MAX_NESTING} levels")
    saved = json.loads(json.dumps(state["identity"], default=str))
    wanted = json.loads(json.dumps(identity, default=str))
    if saved != wanted:
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise UsageError(f"{str(out)!r} holds a run with another configuration ({', '.join(changed)} differ): pass "
                         "--no-resume to start it over, or another --out")
    return state


def restore(out: Path, state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            batch_rng: torch.Generator, rank: int, world: int) -> None:
    """Put a loaded state into the model, the optimizer and this process's batch sampler."""
    rngs = state["batch_rng"]
    if len(rngs) != world:
        raise UsageError(f"{str(out)!r} was saved by {len(rngs)} process(es), this run has {world}: resume with "
                         "the same number, or --no-resume")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batch_rng.set_state(rngs[rank])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:  # a state made by hand for this configuration
        raise _not_a_state(out / STATE, reason(err, 160)) from None


def training_summary(out: Path) -> dict[str, Any]:
    """The summary a finished training run recorded in its ``manifest.json`` (losses, tokens, time)."""
    return json.loads((out / "manifest.json").read_text())["summary"]


def export_model(out: Path, model: torch.nn.Module, model_config: dict[str, Any], tokenizer) -> None:
    """Write the model as mech_interp's "checkpoint" kind reads it; weights first, the config last, so a directory
    with a ``hooked_config.json`` always has the weights that go with it."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _atomic(out / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    tokenizer.save_pretrained(str(out / TOKENIZER))
    _atomic(out / HOOKED_CONFIG, lambda p: p.write_text(json.dumps(model_config, indent=2, default=str)))


def export_series_step(out: Path, step: int, model: torch.nn.Module, model_config: dict[str, Any], tokenizer,
                       row: dict[str, Any]) -> Path:
    """The model at ``step`` as ``<out>/series/step_<step>/`` (module doc), replacing one a killed attempt left."""
    final = out / SERIES / SERIES_STEP.format(step=step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    export_model(tmp, model, model_config, tokenizer)
    # NaN (no evaluation at this step) is not JSON: null
    record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    (tmp / STEP_FILE).write_text(json.dumps(record, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def trim_series(out: Path, last_step: int) -> None:
    """Remove what a run starting after ``last_step`` (0: afresh) must not keep: the series steps after it, and the
    ``.tmp`` directories of exports a kill cut short."""
    series = out / SERIES
    if not series.is_dir():
        return
    for path in series.iterdir():
        match = re.fullmatch(r"step_(\d+)", path.name)
        if path.name.endswith(".tmp") or (match is not None and int(match.group(1)) > last_step):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
