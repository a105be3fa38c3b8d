"""GGUF files: their header read without the weights, and a dequantized float32 HF model, cached.

Dequantizing takes ~16 s for a 135M model; the converted model is saved once under
``$MECH_INTERP_CACHE`` (default ``~/.cache/mech_interp``), keyed by the file's name, size and
mtime, and later loads read that directory. ``MECH_INTERP_CACHE=off`` disables the cache. A cache
entry that cannot be read whole is removed and rebuilt from the GGUF, with a warning (or, when it
cannot be removed, refused in one line saying which directory to delete). The scratch directory of
a conversion killed half-way is removed by the next load of the same file.
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..storage.atomic_files import remove_stale, scratch_path
from ..storage.cache_root import cached_conversion
from ..storage.user_files import require_file
from ..validation.errors import UsageError, reason
from .hf_model import HFModel

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFHeader:
    architecture: str  # GGUF's name, e.g. "llama", "qwen2"
    block_count: int | None
    n_tensors: int
    context_length: int | None = None


class _Truncated(Exception):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _skip(f: BinaryIO, n: int, size: int) -> None:
    if f.tell() + n > size:
        raise _Truncated
    f.seek(n, os.SEEK_CUR)


def _value(f: BinaryIO, kind: int, size: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        (n,) = struct.unpack("<Q", _read(f, 8))
        if n > 1 << 20:  # keys and names are short; a huge length is a damaged file, not a string to read
            _skip(f, n, size)
            return None
        return _read(f, n).decode("utf-8", errors="replace")
    if kind == _ARRAY:
        item_kind, n = struct.unpack("<IQ", _read(f, 12))
        if item_kind in _SCALARS:  # skipped, not parsed: vocabularies hold ~50k entries
            _skip(f, n * struct.calcsize(_SCALARS[item_kind]), size)
        elif item_kind == _STRING:
            for _ in range(n):
                (length,) = struct.unpack("<Q", _read(f, 8))
                _skip(f, length, size)
        else:
            for _ in range(n):
                _value(f, item_kind, size)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def _tensor_bytes(kind: int, shape: list[int]) -> int | None:
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ImportError, ValueError, KeyError):
        return None  # a type this gguf package does not know: its size is not checked
    count = 1
    for d in shape:
        count *= d
    return count // block * type_size


def read_header(path: Path) -> GGUFHeader:
    """Architecture, block count and context length from the header, which is read whole (key/value
    pairs and tensor descriptions, no tensor data) so that a damaged or truncated file is refused
    here, in one line, instead of after a minute of dequantizing."""
    path = require_file(Path(path), "GGUF file", "a .gguf file")
    return _read_header(path, path.stat().st_size)


def _read_header(path: Path, size: int) -> GGUFHeader:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
            if magic != b"GGUF":
                raise UsageError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF')"
                                 + (": the file is empty" if size == 0 else ""))
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            if version < 2:
                raise UsageError(f"{str(path)!r} is GGUF version {version}: expected version 2 or 3")
            # Refused before a loop of billions of reads: counts no model has are damage, and counts of
            # entries (each at least this many bytes) that the file cannot hold mean it was cut short.
            if n_kv > _MAX_KV or n_tensors > _MAX_TENSORS:
                raise ValueError(f"{n_kv} key/value pairs and {n_tensors} tensors: expected at most {_MAX_KV} "
                                 f"and {_MAX_TENSORS}")
            if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > size:
                raise _Truncated
            fields: dict[str, Any] = {}
            for _ in range(n_kv):
                (key_len,) = struct.unpack("<Q", _read(f, 8))
                key = _read(f, key_len).decode("utf-8", errors="replace")
                (kind,) = struct.unpack("<I", _read(f, 4))
                fields[key] = _value(f, kind, size)
            data_end = 0
            for _ in range(n_tensors):
                (name_len,) = struct.unpack("<Q", _read(f, 8))
                _skip(f, name_len, size)
                (n_dims,) = struct.unpack("<I", _read(f, 4))
                shape = list(struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims)))
                kind, offset = struct.unpack("<IQ", _read(f, 12))
                data_end = max(data_end, offset + (_tensor_bytes(kind, shape) or 1))
            alignment = fields.get("general.alignment", 32)
            # The format's alignment is a uint32 multiple of 8; anything else is damage (a string crashed the division).
            if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment < 8 or alignment % 8:
                raise ValueError(f"general.alignment is {alignment!r}: expected a positive multiple of 8")
            data_start = -(-f.tell() // alignment) * alignment
            if n_tensors and data_start + data_end > size:
                raise _Truncated
    except UsageError:
        raise
    except _Truncated:
        raise UsageError(f"GGUF file {str(path)!r} is truncated ({size} bytes, shorter than its header says): "
                         "download it again") from None
    except (ValueError, struct.error, OverflowError, MemoryError) as err:
        raise UsageError(f"GGUF file {str(path)!r} has a corrupt header ({err}): download it again") from None
    except OSError as err:
        raise UsageError(f"GGUF file {str(path)!r} cannot be read: {err.strerror}") from None
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        raise UsageError(f"GGUF file {str(path)!r} names no general.architecture: not a model file")
    for key, (low, high) in _PLAUSIBLE.items():
        value = fields.get(f"{arch}.{key}")
        # A zero block count dequantizes for half a minute and then crashes; four billion never finishes.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
            raise UsageError(f"GGUF file {str(path)!r} has a corrupt header ({arch}.{key} is {value}: expected "
                             f"an integer from {low} to {high}): download it again")
    count, context = fields.get(f"{arch}.block_count"), fields.get(f"{arch}.context_length")
    return GGUFHeader(arch, int(count) if isinstance(count, int) else None, n_tensors,
                      int(context) if isinstance(context, int) else None)


# The smallest key/value pair (empty key, type, one-byte value) and tensor description (empty name,
# no dimension, type, offset).
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
_MAX_KV, _MAX_TENSORS = 1 << 20, 1 << 24  # real files: ~50 pairs, ~10 tensors per block
# Bounds far outside any real model (the largest have ~130 blocks and 10M-token contexts).
_PLAUSIBLE = {
    "block_count": (1, 10_000),
    "context_length": (1, 1 << 30),
    "embedding_length": (1, 1 << 20),
    "attention.head_count": (1, 1 << 16),
}


def load_gguf(path: Path) -> HFModel:
    from .architectures import check_gguf_architecture

    header = read_header(path)
    check_gguf_architecture(header.architecture, path)  # before ~a minute of dequantizing
    cached = cached_conversion(path, "gguf")
    if cached is not None:
        remove_stale(cached)  # the scratch of a conversion whose process was killed
        if cached.exists():
            hf = _load_cached(path, cached)
            if hf is not None:
                return hf
    model, tokenizer = _dequantize(path)
    if cached is not None:
        save_atomically(cached, model, tokenizer)
    return HFModel(model=model, tokenizer=tokenizer, source=f"gguf:{path}")


def _load_cached(path: Path, cached: Path) -> HFModel | None:
    """The cached conversion, or None when it is damaged (then it is removed, to be rebuilt). A
    damaged entry is never loaded in part: missing tensors would be initialised at random."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model, info = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32, output_loading_info=True,
                                                           trust_remote_code=False)
        wrong = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: {sorted(map(str, next(iter(wrong.values()))))[:3]}")
        tokenizer = AutoTokenizer.from_pretrained(cached, trust_remote_code=False)
    except Exception as err:  # a cache entry damaged by a full disk, a kill or an editor: rebuild it
        why = reason(err, 120)
        shutil.rmtree(cached, ignore_errors=True)
        if cached.exists():
            raise UsageError(f"the cached conversion {str(cached)!r} of {str(path)!r} is damaged ({why}) and cannot be "
                             f"removed: delete it (rm -r {str(cached)!r}) or set MECH_INTERP_CACHE=off") from None
        warnings.warn(f"the cached conversion {cached} was damaged ({why}); rebuilding it from {path}", stacklevel=2)
        return None
    model.eval()
    return HFModel(model=model, tokenizer=tokenizer, source=f"gguf:{path} (cached at {cached})")


def _dequantize(path: Path):
    """(float32 HF model, tokenizer) from the GGUF file: the slow step the cache saves."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                      trust_remote_code=False)
    except (ValueError, OSError, KeyError, struct.error, RuntimeError) as err:
        raise UsageError(f"cannot read GGUF file {str(path)!r} ({reason(err, 160)}): "
                         "download it again") from None
    # The GGUF load leaves a quantization_config that TransformerLens reads as "weights are
    # quantized" and refuses; the tensors are already dequantized, so rebuild a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.eval()
    return model, tokenizer


def save_atomically(target: Path, *parts) -> None:
    """Saves ``parts`` (a model, a tokenizer, a config: whatever has ``save_pretrained``) for later loads. The cache
    only saves time: whatever stops the save (a full disk, which safetensors reports as its own SafetensorError, a
    read-only cache, a concurrent writer that won) leaves no scratch or new empty directory behind, and what is in
    memory is used."""
    created = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    scratch = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = scratch_path(target)
        for part in parts:
            part.save_pretrained(scratch)
        os.replace(scratch, target)
    except BaseException as err:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)  # also on Ctrl-C: ~50 MB per model
        for directory in created:  # deepest first; a directory another process filled meanwhile stays
            try:
                directory.rmdir()
            except OSError:
                break
        if not isinstance(err, Exception):
            raise
        if not target.exists():  # else a concurrent writer saved the same conversion
            why = reason(err, 120)
            warnings.warn(f"the conversion could not be cached at {target} ({why}); using it without the "
                          "cache, so the next load converts it again", stacklevel=3)
