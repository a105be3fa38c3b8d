"""Trained checkpoints: a directory with ``hooked_config.json``, the weights of a HookedTransformer built in code, and
optionally its tokenizer.

Loading a checkpoint never runs code that the directory chooses. The dependency goes one way: mech_interp names the
training package's format in its own fixed table ``FORMATS`` (the builder, the variants, where each size shows in the
weights) and never imports that package when mech_interp itself is imported. Of the strings in that table, the
variants (``train_gpt2_bias.variants``, no torch) are imported when a checkpoint's spec is parsed, to check its
variant; the builder (``train_gpt2_bias.model``) only when its model loads. What a checkpoint may contain, all
checked when the spec is parsed, before the model is built:

- ``hooked_config.json``: one JSON object with exactly these keys:
  - ``"format"``, a name in ``FORMATS`` (``"train_gpt2_bias"``); ``"format_version"``, one of its versions (1);
    ``"variant"``, one of its variants (train_gpt2_bias: ``default``, ``sink``, ``attn_bias``, ``gated``);
  - the HookedTransformerConfig fields and the variant's settings in ``FIELDS``, each of the type given there.
  A checkpoint of the previous version has ``"builder": "train_gpt2_bias.model:build_model"`` in place of format
  and format_version: that exact string (compared as a string, never imported as given) reads as format version 0
  of train_gpt2_bias; any other builder is refused.
- the weights: ``model.safetensors`` (its header is read when the spec is parsed), or ``model.pt`` holding a state
  dict of tensors, read with ``mech_interp.storage.tensor_files.load_tensors`` (``torch.load(weights_only=True)``,
  memory-mapped when in torch's zip format: no pickled code runs, and at parse time the tensors are not read;
  anything else in it is refused). The config's sizes (``n_layers``, ``d_model``, ``n_heads``, ``d_head``,
  ``d_mlp``, ``n_ctx``, ``d_vocab``) must be the weights' (their shapes, from the header or the memory map): a
  config cannot make the build allocate what the weights do not hold;
- ``tokenizer/`` (optional): a Hugging Face tokenizer directory, loaded with ``trust_remote_code=False``.
"""

from __future__ import annotations

import importlib
import math
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..storage.tensor_files import load_tensors, safetensors_shapes
from ..storage.user_files import read_json_object
from ..validation.errors import UsageError, first_sentence, reason

CONFIG_FILE = "hooked_config.json"
WEIGHT_FILES = ("model.safetensors", "model.pt")
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class CheckpointFormat:
    versions: tuple[int, ...]
    builder: str  # "module:function" of our own code: builds the model from the checked config
    variants: str  # "module:MAPPING" of our own code: the variant names the builder takes
    sizes: dict[str, tuple[str, int]]  # config key -> (weight, dimension) that must equal it, in this order
    blocks: str  # block i's weights are named "<blocks>.<i>.*": there must be n_layers of them


# Where TransformerLens' HookedTransformer state dict shows each size of its config.
HOOKED_SIZES = {"d_vocab": ("embed.W_E", 0), "d_model": ("embed.W_E", 1), "n_ctx": ("pos_embed.W_pos", 0),
                "n_heads": ("blocks.0.attn.W_Q", 0), "d_head": ("blocks.0.attn.W_Q", 2),
                "d_mlp": ("blocks.0.mlp.W_in", 1)}
FORMATS: dict[str, CheckpointFormat] = {
    "train_gpt2_bias": CheckpointFormat((1,), "train_gpt2_bias.model:build_model", "train_gpt2_bias.variants:VARIANTS",
                                        HOOKED_SIZES, "blocks"),
}
EXPECTED_WEIGHTS = "model.safetensors, or model.pt saved from model.state_dict()"
# What the previous version wrote instead of a format: a builder string, accepted only as this exact text, read as
# version 0 of the format it names here.
LEGACY_BUILDERS = {"train_gpt2_bias.model:build_model": ("train_gpt2_bias", 0)}
IDENTIFYING_KEYS = ("format", "format_version", "builder")  # which format; never passed to a builder


def _integer(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
            "a positive integer" if low == 1 else f"an integer >= {low}")


_TEXT = (lambda v: isinstance(v, str), "a string")
_FLAG = (lambda v: isinstance(v, bool), "true or false")
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{key: _integer(1) for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab")},
    **{key: _TEXT for key in ("act_fn", "normalization_type", "positional_embedding_type", "attention_dir",
                              "original_architecture", "model_name", "variant")},
    "eps": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf,
            "a positive number"),
    "default_prepend_bos": _FLAG,
    "bias": _FLAG,
    "n_prefix_tokens": _integer(0),
    "n_key_slots": _integer(0),
}


def is_checkpoint_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).exists()


def _accepted() -> str:
    formats = "; ".join(f"\"format\": {name!r} with format_version {fmt.versions[-1]}" for name, fmt in FORMATS.items())
    return f"{formats}; or a checkpoint of the previous version, with builder {' or '.join(map(repr, LEGACY_BUILDERS))}"


def checkpoint_format(config: dict[str, Any], text: str) -> tuple[str, int]:
    """(format name, version) of a checkpoint's config; refused in one line unless our tables know it. Nothing the
    file names is imported: a builder is only compared with the legacy strings."""
    where = f"checkpoint {text!r}: {CONFIG_FILE}"
    if "builder" in config:
        builder = config["builder"]
        if "format" in config or not isinstance(builder, str) or builder not in LEGACY_BUILDERS:
            raise UsageError(f"{where} names builder {builder!r}, which is not loaded (a checkpoint cannot choose the "
                             f"code that builds it): expected {_accepted()}")
        return LEGACY_BUILDERS[builder]
    name, version = config.get("format"), config.get("format_version")
    if not isinstance(name, str) or name not in FORMATS:
        raise UsageError(f"{where} has format {name!r}: expected {_accepted()}")
    if isinstance(version, bool) or version not in FORMATS[name].versions:
        raise UsageError(f"{where} has format_version {version!r} of format {name!r}: expected "
                         f"{FORMATS[name].versions[-1]}")
    return name, version


def _import(target: str, text: str) -> Any:
    """The object ``module:name`` of one of OUR tables (never a string read from a checkpoint)."""
    module_name, name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UsageError(f"checkpoint {text!r} needs {module_name!r} to build its model, which cannot be imported "
                         f"({err}): install the package that trained it") from None
    return getattr(module, name)


def read_checkpoint_config(path: Path, text: str) -> dict[str, Any]:
    """The config of checkpoint directory ``path``, checked against the module doc (format, keys and their types,
    variant) with readable weights beside it."""
    file = path / CONFIG_FILE
    if not file.is_file():
        raise UsageError(f"checkpoint {text!r}: {CONFIG_FILE} is not a file")
    config = read_json_object(file, f"checkpoint {text!r}")
    name, version = checkpoint_format(config, text)
    where = f"checkpoint {text!r}: {CONFIG_FILE}"
    allowed = set(FIELDS) | ({"builder"} if version == 0 else {"format", "format_version"})
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise UsageError(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}: expected only "
                         f"{', '.join(sorted(allowed))}")
    for key, (valid, expected) in FIELDS.items():
        if key not in config:
            raise UsageError(f"{where} lacks {key!r}: expected {expected}")
        if not valid(config[key]):
            raise UsageError(f"{where} has {key} {config[key]!r}: expected {expected}")
    variants = _import(FORMATS[name].variants, text)
    if config["variant"] not in variants:
        raise UsageError(f"{where} has variant {config['variant']!r}: expected one of {', '.join(variants)}")
    weights = weights_file(path)
    if weights is None:
        raise UsageError(f"checkpoint {text!r} has no weights ({' or '.join(WEIGHT_FILES)})")
    _check_sizes(config, FORMATS[name], _shapes(weights, text), weights.name, text)
    return config


def weights_file(path: Path) -> Path | None:
    return next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)


def _shapes(weights: Path, text: str) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in ``weights``, read without the tensors: a safetensors header, or a model.pt
    memory-mapped (its pickle is parsed, its tensors stay on disk)."""
    if weights.suffix != ".safetensors":
        return {k: tuple(v.shape) for k, v in read_weights(weights, text).items()}
    return safetensors_shapes(weights, "checkpoint weights", EXPECTED_WEIGHTS)


def _check_sizes(config: dict[str, Any], fmt: CheckpointFormat, shapes: dict[str, tuple[int, ...]], file: str,
                 text: str) -> None:
    """Refuse a config whose sizes are not those of the weights, before the build allocates what the config says."""
    where = f"checkpoint {text!r}: {CONFIG_FILE}"
    for key, (weight, dim) in fmt.sizes.items():
        shape = shapes.get(weight)
        if shape is None or len(shape) <= dim:
            held = "no" if shape is None else f"a {len(shape)}-dimensional"
            raise UsageError(f"checkpoint {text!r}: the weights ({file}) have {held} {weight!r}, which gives {key}: "
                             "expected the weights of the model its config describes")
        if config[key] != shape[dim]:
            raise UsageError(f"{where} has {key} {config[key]}, but the weights have {shape[dim]} ({file}: {weight} "
                             f"{list(shape)}): expected the sizes of the weights beside it")
    pattern = re.compile(rf"{re.escape(fmt.blocks)}\.(\d+)\.")
    blocks = sorted({int(m.group(1)) for k in shapes if (m := pattern.match(k))})
    if config["n_layers"] != len(blocks):
        held = f"blocks {blocks[0]}..{blocks[-1]}" if blocks else "no block"
        raise UsageError(f"{where} has n_layers {config['n_layers']}, but the weights have {len(blocks)} ({file}: "
                         f"{held}): expected the sizes of the weights beside it")
    # The build allocates n_layers blocks like block 0: a block of stub tensors must not pass for a full one.
    parts = [{k.removeprefix(f"{fmt.blocks}.{b}."): v for k, v in shapes.items() if k.startswith(f"{fmt.blocks}.{b}.")}
             for b in range(len(blocks))]
    for b, part in enumerate(parts):
        if b not in blocks or part != parts[0]:
            odd = sorted(set(part) ^ set(parts[0]) | {k for k in part if parts[0].get(k, part[k]) != part[k]})
            raise UsageError(f"checkpoint {text!r}: the weights' block {b} ({file}) is not shaped as block 0"
                             + (f" ({fmt.blocks}.{b}.{odd[0]})" if odd else "") + ": expected n_layers alike blocks")


def read_weights(weights: Path, text: str) -> dict[str, Any]:
    """The state dict in ``weights``, read without running pickled code (a model.pt memory-mapped when in torch's zip
    format); one line when it is anything else."""
    import torch

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except Exception as err:  # the safetensors library's own error type, or an OSError: the file is at fault
            raise UsageError(f"cannot read checkpoint weights {str(weights)!r} ({first_sentence(str(err))}): "
                             f"expected {EXPECTED_WEIGHTS}") from None
    else:
        state = load_tensors(weights, "checkpoint weights", EXPECTED_WEIGHTS, mmap=zipfile.is_zipfile(weights))
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UsageError(f"checkpoint {text!r}: {weights.name} holds a {type(state).__name__}, not a state dict of "
                         f"tensors: expected {EXPECTED_WEIGHTS}")
    return state


def load_checkpoint(path: Path, text: str, device, dtype, prepend_bos: bool):
    """Read the weights, build the model with the builder of the checkpoint's format (every key must match), attach
    the tokenizer."""
    import torch

    config = read_checkpoint_config(path, text)
    name, _ = checkpoint_format(config, text)
    state = read_weights(weights_file(path), text)  # before the build: a bad file is refused without it
    build = _import(FORMATS[name].builder, text)
    try:
        model = build({k: v for k, v in config.items() if k not in IDENTIFYING_KEYS})
    except (ValueError, TypeError, AssertionError) as err:  # values of the right type that make no model
        raise UsageError(f"checkpoint {text!r}: {CONFIG_FILE} does not describe a model ({reason(err, 300)})"
                         ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UsageError(f"checkpoint {text!r}: the weights do not fit the model its config describes "
                         f"({reason(err, 300)})") from None
    if (path / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path / TOKENIZER_DIR), trust_remote_code=False)
        except (OSError, ValueError) as err:  # custom code it would need, missing or broken files
            raise UsageError(f"checkpoint {text!r}: {TOKENIZER_DIR}/ is not a tokenizer that loads without custom "
                             f"code ({reason(err)})") from None
        model.set_tokenizer(tokenizer, default_padding_side="right")
    model.cfg.default_prepend_bos = prepend_bos
    if dtype != model.cfg.dtype:
        model.to(dtype)
    if torch.device(device) != torch.device(model.cfg.device):
        model.to(device)
    return model
