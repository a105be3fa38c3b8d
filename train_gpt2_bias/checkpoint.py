"""What a training run leaves in its directory, and how it is read back.

- ``ckpt.pt``: the training state (model, optimizer, step, every process's batch-sampler RNG, the log so far, the
  configuration it belongs to), written atomically every ``ckpt_interval`` steps; ``train`` resumes from it.
- The model, in the form ``mech_interp`` loads (the "checkpoint" ModelSpec kind, convention 3 of the project):
  ``hooked_config.json`` (HookedTransformerConfig fields, the variant, and ``"builder":
  "train_gpt2_bias.model:build_model"``), ``model.safetensors`` (the state dict) and ``tokenizer/``. So
  ``mech-interp layerwise --model <run dir>`` works on every variant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mech_interp.errors import UsageError

STATE = "ckpt.pt"
HOOKED_CONFIG = "hooked_config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_state(out: Path, state: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / STATE, lambda p: torch.save(state, p))


def load_state(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved training state of ``out`` when its configuration equals ``identity``; None when there is none.
    A state of another configuration is refused (resuming it would mix two runs)."""
    path = out / STATE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = json.loads(json.dumps(state.get("identity"), default=str))
    wanted = json.loads(json.dumps(identity, default=str))
    if saved != wanted:
        changed = sorted(k for k in set(saved or {}) | set(wanted) if (saved or {}).get(k) != wanted.get(k))
        raise UsageError(f"{str(out)!r} holds a run with another configuration ({', '.join(changed)} differ): pass "
                         "--no-resume to start it over, or another --out")
    return state


def export_model(out: Path, model: torch.nn.Module, model_config: dict[str, Any], tokenizer) -> None:
    """Write the model as mech_interp's "checkpoint" kind reads it; weights first, the config last, so a directory
    with a ``hooked_config.json`` always has the weights that go with it."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _atomic(out / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    tokenizer.save_pretrained(str(out / TOKENIZER))
    _atomic(out / HOOKED_CONFIG, lambda p: p.write_text(json.dumps(model_config, indent=2, default=str)))
