"""GGUF files: their header read without the weights, and a dequantized float32 HF model, cached.

Dequantizing takes ~16 s for a 135M model; the converted model is saved once under
``$MECH_INTERP_CACHE`` (default ``~/.cache/mech_interp``), keyed by the file's name, size and
mtime, and later loads read that directory. ``MECH_INTERP_CACHE=off`` disables the cache. A cache
entry that cannot be read is removed and rebuilt from the GGUF, with a warning.
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UsageError
from ..scratch import scratch_path
from .hf_model import HFModel

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFHeader:
    architecture: str  # GGUF's name, e.g. "llama", "qwen2"
    block_count: int | None
    n_tensors: int


class _Truncated(Exception):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _value(f: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        (n,) = struct.unpack("<Q", _read(f, 8))
        return _read(f, n).decode("utf-8", errors="replace")
    if kind == _ARRAY:
        item_kind, n = struct.unpack("<IQ", _read(f, 12))
        if item_kind in _SCALARS:  # skipped, not parsed: vocabularies hold ~50k entries
            _read(f, n * struct.calcsize(_SCALARS[item_kind]))
            return None
        return [_value(f, item_kind) for _ in range(n)]
    raise ValueError(f"unknown GGUF value type {kind}")


def read_header(path: Path) -> GGUFHeader:
    """Architecture and block count from the key/value header (reads no tensor data)."""
    if path.is_dir():
        raise UsageError(f"GGUF file {str(path)!r} is a directory: expected a .gguf file")
    if not path.is_file():
        raise UsageError(f"GGUF file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
            if magic != b"GGUF":
                raise UsageError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            if version < 2:
                raise UsageError(f"{str(path)!r} is GGUF version {version}: expected version 2 or 3")
            fields: dict[str, Any] = {}
            for _ in range(n_kv):
                (key_len,) = struct.unpack("<Q", _read(f, 8))
                key = _read(f, key_len).decode("utf-8", errors="replace")
                (kind,) = struct.unpack("<I", _read(f, 4))
                fields[key] = _value(f, kind)
                arch = fields.get("general.architecture")
                if arch is not None and f"{arch}.block_count" in fields:
                    break
    except _Truncated:
        raise UsageError(f"GGUF file {str(path)!r} is truncated (its header ends early): download it again") from None
    except (ValueError, struct.error, OverflowError, MemoryError) as err:
        raise UsageError(f"GGUF file {str(path)!r} has a corrupt header ({err}): download it again") from None
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        raise UsageError(f"GGUF file {str(path)!r} names no general.architecture: not a model file")
    count = fields.get(f"{arch}.block_count")
    return GGUFHeader(arch, int(count) if count is not None else None, n_tensors)


def cache_root() -> Path | None:
    setting = os.environ.get("MECH_INTERP_CACHE", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    return Path(setting).expanduser() if setting else Path.home() / ".cache" / "mech_interp"


def _cache_dir(path: Path) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    stat = path.stat()
    return root / "gguf" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def load_gguf(path: Path) -> HFModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .architectures import check_gguf_architecture

    header = read_header(path)
    check_gguf_architecture(header.architecture, path)  # before ~a minute of dequantizing
    cached = _cache_dir(path)
    if cached is not None and (cached / "config.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
            model.eval()
            return HFModel(model=model, tokenizer=AutoTokenizer.from_pretrained(cached),
                           source=f"gguf:{path} (cached at {cached})")
        except Exception as err:  # a cache entry damaged by a full disk or an editor: rebuild it
            warnings.warn(f"the cached conversion {cached} cannot be read ({type(err).__name__}); rebuilding it from {path}")
            shutil.rmtree(cached, ignore_errors=True)

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, struct.error) as err:
        raise UsageError(f"cannot read GGUF file {str(path)!r} ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    # The GGUF load leaves a quantization_config that TransformerLens reads as "weights are
    # quantized" and refuses; the tensors are already dequantized, so rebuild a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.eval()
    if cached is not None:
        _save_atomically(model, tokenizer, cached)
    return HFModel(model=model, tokenizer=tokenizer, source=f"gguf:{path}")


def _save_atomically(model, tokenizer, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache only costs time
    scratch = scratch_path(target)
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.replace(scratch, target)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # a concurrent writer won, or the disk is full: load still works
