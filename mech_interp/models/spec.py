"""A model spec, parsed once: a registered name, a local HF directory, a trained checkpoint directory
(``hooked_config.json`` + weights, see ``checkpoint.py``), a GGUF file, or a hub name.

Parsing checks everything that can be checked without loading weights (the path exists and has
the right kind, the directory has a readable config.json, the GGUF header names an architecture
that loads), so bad input fails in one line before the slow part. ``metadata()`` reads the family
and the number of layers from the registry, config.json or the GGUF header, never the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..core.token_layout import TokenLayout
from ..storage.user_files import read_json_object
from ..validation.errors import UsageError
from .registry import is_registered, list_models, model_entry

Kind = Literal["registered", "hf_dir", "checkpoint", "gguf", "hub"]
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


@dataclass(frozen=True)
class ModelMetadata:
    family: str | None  # HF architecture class
    n_layers: int | None
    # Context length where the registry, config.json or the GGUF header says it; not compared, so a
    # registered name and its file describe the same model whichever of them records it.
    n_ctx: int | None = field(default=None, compare=False)
    # Prefix positions and key slots: only a trained checkpoint of a variant that adds them has any.
    layout: TokenLayout = field(default_factory=TokenLayout, compare=False)


@dataclass(frozen=True)
class ModelSpec:
    text: str  # as given
    kind: Kind
    path: Path | None = None  # resolved, for local files
    # Read from the registry, config.json, hooked_config.json or the GGUF header while parsing, never again.
    meta: ModelMetadata = field(default_factory=lambda: ModelMetadata(None, None), compare=False)

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"empty model name {text!r}: expected one of {', '.join(list_models())}, "
                             "a local Hugging Face directory, a .gguf file, or a hub name such as gpt2")
        if is_registered(text):
            entry = model_entry(text)
            return cls(text, "registered", None, ModelMetadata(entry.family, entry.n_layers, entry.n_ctx))
        path = Path(text).expanduser()
        if text.lower().endswith(".gguf") or (path.is_file() and path.suffix.lower() == ".gguf"):
            from .architectures import check_gguf_architecture
            from .gguf import read_header

            header = read_header(path)  # exists, is a file, is a GGUF, not truncated, plausible sizes
            check_gguf_architecture(header.architecture, path)  # without importing torch
            if header.block_count is not None and header.n_tensors < header.block_count:
                raise UsageError(f"GGUF file {text!r} has a corrupt header ({header.n_tensors} tensors for "
                                 f"{header.block_count} blocks): download it again")
            from .architectures import GGUF_ARCHITECTURES

            meta = ModelMetadata(GGUF_ARCHITECTURES.get(header.architecture), header.block_count, header.context_length)
            return cls(text, "gguf", path.resolve(), meta)
        if path.is_dir():
            from .checkpoint import is_checkpoint_dir, read_checkpoint_config

            if is_checkpoint_dir(path):
                config = read_checkpoint_config(path, text)
                return cls(text, "checkpoint", path.resolve(), ModelMetadata(
                    config["original_architecture"], config["n_layers"], config["n_ctx"],
                    TokenLayout(config["n_prefix_tokens"], config["n_key_slots"])))
            config = _check_hf_dir(path, text)
            archs = config.get("architectures") or [None]
            return cls(text, "hf_dir", path.resolve(),
                       ModelMetadata(archs[0], _n_layers(config), _int_key(config, _CTX_KEYS)))
        if path.exists():
            raise UsageError(f"model {text!r} is a file but not a .gguf: expected a GGUF file, a Hugging Face model "
                             "directory, a trained checkpoint directory (hooked_config.json + model.safetensors), "
                             "or a registered name")
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
        """The family, layers, context and token layout, read when the spec was parsed."""
        return self.meta

    def fingerprint(self) -> dict[str, str] | None:
        """Size and mtime of the local files that hold the model (the GGUF, or config.json / hooked_config.json
        and the weights of a directory), so that a run of a file replaced in place is seen as stale without
        hashing gigabytes. None for registered and hub models, which a name fixes."""
        stats = self._file_stats()
        if stats is None:
            return None
        return {name: f"{stat.st_size} bytes, mtime_ns {stat.st_mtime_ns}" for name, stat in stats.items()}

    def file_sizes(self) -> dict[str, int] | None:
        """Bytes of each local file that holds the model (those of ``fingerprint``); None for registered
        and hub models."""
        stats = self._file_stats()
        return None if stats is None else {name: stat.st_size for name, stat in stats.items()}

    def _file_stats(self) -> dict[str, os.stat_result] | None:
        if self.kind == "gguf":
            files = [self.path]
        elif self.kind == "hf_dir":
            files = sorted({self.path / "config.json", *_weight_files(self.path)})
        elif self.kind == "checkpoint":
            from .checkpoint import CONFIG_FILE, WEIGHT_FILES

            files = [self.path / name for name in (CONFIG_FILE, *WEIGHT_FILES)]
        else:
            return None
        stats = {}
        for file in files:
            try:
                stats[file.name] = file.stat()
            except OSError:
                continue  # gone since parsing: the load refuses it
        return stats


def _read_config(path: Path, text: str) -> dict:
    config_file = path / "config.json"
    if config_file.is_dir():
        raise UsageError(f"model directory {text!r}: config.json is a directory, not a file: expected a Hugging "
                         "Face model directory")
    if not config_file.is_file():
        raise UsageError(f"model directory {text!r} has no config.json: expected a Hugging Face model directory")
    return read_json_object(config_file, f"model directory {text!r}", ": fix or re-download it")


def _check_hf_dir(path: Path, text: str) -> dict:
    """config.json, once the directory is checked to hold a model that loads."""
    config = _read_config(path, text)
    from .architectures import check_hf_architecture

    archs = config.get("architectures") or [None]
    check_hf_architecture(archs[0], f"model directory {text!r}")
    for key in _LAYER_KEYS + _CTX_KEYS:
        _check_positive(config, key, text)
    if not any(any(path.glob(p)) for p in _WEIGHTS):
        raise UsageError(f"model directory {text!r} has no weights (*.safetensors or pytorch_model*.bin)")
    for index in _INDEXES:
        if (path / index).exists():
            _check_index(path, index, text)
    if not _has_tokenizer(path):
        raise UsageError(f"model directory {text!r} has no tokenizer files (tokenizer.json, tokenizer.model, "
                         "vocab.json with merges.txt, or tokenizer_config.json with its vocabulary): copy them "
                         "from the model it came from")
    return config


_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Files a tokenizer loads from: one of these alone, or a vocabulary beside tokenizer_config.json.
_TOKENIZER_ALONE = ("tokenizer.json", "tokenizer.model")
_VOCABULARIES = ("vocab.txt", "spiece.model", "sentencepiece.bpe.model", "*.tiktoken")  # vocab.json needs merges.txt


def _has_tokenizer(path: Path) -> bool:
    if any((path / name).is_file() for name in _TOKENIZER_ALONE):
        return True
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return True
    return (path / "tokenizer_config.json").is_file() and any(
        f.is_file() for pattern in _VOCABULARIES for f in path.glob(pattern))


def _check_index(path: Path, index: str, text: str) -> None:
    """Every shard the index names exists: else the load fails only after reading the others."""
    data = read_json_object(path / index, f"model directory {text!r}", ": fix or re-download it")
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UsageError(f"model directory {text!r} has a broken {index} (no weight_map of tensor -> shard file): "
                         "fix or re-download it")
    missing = sorted({shard for shard in weight_map.values() if not (path / shard).is_file()})
    if missing:
        raise UsageError(f"model directory {text!r} lacks {len(missing)} weight shard(s) named in {index} "
                         f"(e.g. {missing[0]!r}): fix or re-download it")


def _weight_files(path: Path) -> list[Path]:
    return [f for pattern in (*_WEIGHTS, *_INDEXES) for f in path.glob(pattern) if f.is_file()]


def _check_positive(config: dict, key: str, text: str) -> None:
    """A size the metadata reads: absent, or a positive integer (a negative or zero layer count
    otherwise passes every check and fails deep inside the conversion)."""
    for where, section in (("", config), ("text_config.", config.get("text_config"))):
        if not isinstance(section, dict) or section.get(key) is None:
            continue
        value = section[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"model directory {text!r} has a broken config.json ({where}{key} is {value!r}: "
                             "expected a positive integer): fix or re-download it")


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
