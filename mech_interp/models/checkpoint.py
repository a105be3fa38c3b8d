"""Trained checkpoints: a directory with ``hooked_config.json`` and the weights of a HookedTransformer built in code.

``hooked_config.json`` holds HookedTransformerConfig fields plus ``"builder": "package.module:function"``, the
function that builds the model from that dict (e.g. ``train_gpt2_bias.model:build_model`` for the GPT-2 variants
with a sink token or attention-bias slots); the weights are ``model.safetensors`` or ``model.pt`` (a state dict);
``tokenizer/`` is optional. The builder is imported by name when the model loads, so mech_interp never imports the
packages that train such models. Everything but the weights is checked when the spec is parsed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..user_files import read_json_object

CONFIG_FILE = "hooked_config.json"
WEIGHT_FILES = ("model.safetensors", "model.pt")
TOKENIZER_DIR = "tokenizer"


def is_checkpoint_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).exists()


def read_checkpoint_config(path: Path, text: str) -> dict[str, Any]:
    """The config of checkpoint directory ``path``, checked: a JSON object, a ``module:function`` builder, positive
    sizes, and weights beside it."""
    file = path / CONFIG_FILE
    if not file.is_file():
        raise UsageError(f"checkpoint {text!r}: {CONFIG_FILE} is not a file")
    config = read_json_object(file, f"checkpoint {text!r}")
    builder = config.get("builder")
    if not isinstance(builder, str) or builder.count(":") != 1 or not all(builder.split(":")):
        raise UsageError(f"checkpoint {text!r}: {CONFIG_FILE} has builder {builder!r}: expected "
                         "\"package.module:function\"")
    for key in ("n_layers", "d_model", "n_ctx", "d_vocab"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"checkpoint {text!r}: {CONFIG_FILE} has {key} {value!r}: expected a positive integer")
    if weights_file(path) is None:
        raise UsageError(f"checkpoint {text!r} has no weights ({' or '.join(WEIGHT_FILES)})")
    return config


def weights_file(path: Path) -> Path | None:
    return next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)


def _builder(name: str, text: str) -> Callable[[dict[str, Any]], Any]:
    module_name, function = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UsageError(f"checkpoint {text!r} needs {module_name!r} to build its model, which cannot be imported "
                         f"({err}): install the package that trained it") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise UsageError(f"checkpoint {text!r}: builder {name!r} is not a function of {module_name!r}")
    return fn


def load_checkpoint(path: Path, text: str, device, dtype, prepend_bos: bool):
    """Build the model with its builder, load the weights (every key must match), attach the tokenizer."""
    import torch

    config = read_checkpoint_config(path, text)
    model = _builder(config["builder"], text)(config)
    weights = weights_file(path)
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UsageError(f"checkpoint {text!r}: the weights do not fit the model its builder makes "
                         f"({' '.join(str(err).split())[:300]})") from None
    if (path / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        model.set_tokenizer(AutoTokenizer.from_pretrained(str(path / TOKENIZER_DIR)), default_padding_side="right")
    model.cfg.default_prepend_bos = prepend_bos
    if dtype != model.cfg.dtype:
        model.to(dtype)
    if torch.device(device) != torch.device(model.cfg.device):
        model.to(device)
    return model
