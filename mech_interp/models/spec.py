"""A model spec, parsed once: a registered name, a local HF directory, a GGUF file, or a hub name.

Parsing checks everything that can be checked without loading weights (the path exists and has
the right kind, the directory has a readable config.json, the GGUF header names an architecture
that loads), so bad input fails in one line before the slow part. ``metadata()`` reads the family
and the number of layers from the registry, config.json or the GGUF header, never the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import UsageError
from .registry import is_registered, list_models, model_entry

Kind = Literal["registered", "hf_dir", "gguf", "hub"]
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


@dataclass(frozen=True)
class ModelMetadata:
    family: str | None  # HF architecture class
    n_layers: int | None
    # Context length where the registry, config.json or the GGUF header says it; not compared, so a
    # registered name and its file describe the same model whichever of them records it.
    n_ctx: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ModelSpec:
    text: str  # as given
    kind: Kind
    path: Path | None = None  # resolved, for local files

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"empty model name {text!r}: expected one of {', '.join(list_models())}, "
                             "a local Hugging Face directory, a .gguf file, or a hub name such as gpt2")
        if is_registered(text):
            return cls(text, "registered")
        path = Path(text).expanduser()
        if text.lower().endswith(".gguf") or (path.is_file() and path.suffix.lower() == ".gguf"):
            from .gguf import read_header

            read_header(path)  # exists, is a file, is a GGUF, not truncated
            return cls(text, "gguf", path.resolve())
        if path.is_dir():
            _check_hf_dir(path, text)
            return cls(text, "hf_dir", path.resolve())
        if path.exists():
            raise UsageError(f"model {text!r} is a file but not a .gguf: expected a GGUF file, a Hugging Face model "
                             "directory, or a registered name")
        if "/" in text.rstrip("/").split("/", 1)[-1] or text.startswith((".", "~")) or text.endswith("/"):
            raise UsageError(f"model path {text!r} does not exist")
        return cls(text, "hub")

    @property
    def slug(self) -> str:
        """A directory-safe name for results: ``/models/Llama-2-7b/`` -> ``Llama-2-7b``."""
        name = self.path.stem if self.kind == "gguf" else self.path.name if self.path is not None else self.text
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "model"

    @property
    def source(self) -> str:
        """What the spec names, independent of the working directory."""
        return str(self.path) if self.path is not None else self.text

    def metadata(self) -> ModelMetadata:
        if self.kind == "registered":
            entry = model_entry(self.text)
            return ModelMetadata(entry.family, entry.n_layers, entry.n_ctx)
        if self.kind == "hf_dir":
            config = _read_config(self.path, self.text)
            archs = config.get("architectures") or [None]
            return ModelMetadata(archs[0], _n_layers(config), _int_key(config, _CTX_KEYS))
        if self.kind == "gguf":
            from .architectures import GGUF_ARCHITECTURES
            from .gguf import read_header

            header = read_header(self.path)
            return ModelMetadata(GGUF_ARCHITECTURES.get(header.architecture), header.block_count, header.context_length)
        return ModelMetadata(None, None)  # a hub name: known when it loads


def _read_config(path: Path, text: str) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UsageError(f"model directory {text!r} has no config.json: expected a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"model directory {text!r} has a broken config.json ({err}): fix or re-download it") from None
    except OSError as err:
        raise UsageError(f"model directory {text!r}: config.json cannot be read ({err.strerror})") from None
    if not isinstance(config, dict):
        raise UsageError(f"model directory {text!r} has a config.json that is not a JSON object")
    return config


def _check_hf_dir(path: Path, text: str) -> None:
    config = _read_config(path, text)
    from .architectures import check_hf_architecture

    archs = config.get("architectures") or [None]
    check_hf_architecture(archs[0], f"model directory {text!r}")
    if not any(any(path.glob(p)) for p in _WEIGHTS):
        raise UsageError(f"model directory {text!r} has no weights (*.safetensors or pytorch_model*.bin)")


_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_CTX_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")


def _int_key(config: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int) and not isinstance(config.get(key), bool):
            return config[key]
    text_config = config.get("text_config")
    return _int_key(text_config, keys) if isinstance(text_config, dict) else None


def _n_layers(config: dict) -> int | None:
    return _int_key(config, _LAYER_KEYS)
