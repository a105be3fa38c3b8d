"""Tensors from a file a user names (model weights, a training state, a linear head, register means, a timm
checkpoint): read with ``torch.load(weights_only=True)`` or safetensors only, so a pickle that would run code is
refused, never run; every failure, and a value no measurement can use (complex, NaN, infinite), refused in one
line. The one place such files are opened, for every study."""

from __future__ import annotations

import argparse
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..validation.errors import UsageError, first_sentence, reason

_REFUSED = "Weights only load failed"
_WEIGHTS_ONLY = "WeightsUnpickler error:"


def _reason(err: Exception) -> str:
    """torch's own first sentence on why, without its boilerplate (and its advice to load with
    weights_only=False)."""
    text = str(err)
    if not text.startswith(_REFUSED):  # e.g. KeyError: 105 from the unpickler on a text file
        return reason(err)
    # The sentence sits after "WeightsUnpickler error:" or in the paragraph after the boilerplate one.
    after = text.split(_WEIGHTS_ONLY, 1)[1] if _WEIGHTS_ONLY in text else text.split("\n\n", 1)[-1]
    why = next((p for p in after.split("\n\n") if p.strip() and not p.strip().startswith("Check the doc")), "")
    return f"not loadable with weights_only=True: {first_sentence(why)}"


def load_tensors(path: Path, what: str, expected: str, mmap: bool = False, safe_globals: tuple = ()) -> Any:
    """What ``torch.load(path, weights_only=True)`` gives, on the CPU (memory-mapped with ``mmap``, a
    zip-format file only); ``what`` names the file in the messages ("--head"), ``expected`` says what it
    should hold; ``safe_globals`` are plain-data classes the file may also hold (as its reader allows)."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(safe_globals)):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing the file
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # whatever torch raises on a file it cannot read (KeyError on text), the file is at fault
        raise UsageError(f"cannot read {what} {str(path)!r} ({_reason(err)}): expected {expected}") from None


def safetensors_shapes(path: Path, what: str, expected: str) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a safetensors file, from its header alone (no tensor is read); a header that
    cannot be read is refused in one line."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "numpy") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as err:  # the safetensors library's own error type, or an OSError
        raise UsageError(f"cannot read {what} {str(path)!r} ({first_sentence(str(err))}): expected {expected}"
                         ) from None


def check_checkpoint(path: Path, expected: str) -> None:
    """Refuse, before a model is built from it, a checkpoint that timm's loader (``weights_only=True`` with
    ``argparse.Namespace`` allowed, as timm's own training checkpoints hold their arguments; or safetensors) would
    fail on with a traceback. Cheap: the tensors stay on disk (a zip-format file is memory-mapped; of a safetensors
    file only the header is read)."""
    if path.suffix.lower() == ".safetensors":
        safetensors_shapes(path, "checkpoint", expected)
    else:
        load_tensors(path, "checkpoint", expected, mmap=zipfile.is_zipfile(path), safe_globals=(argparse.Namespace,))


def require_real_finite(tensor: torch.Tensor, where: str) -> None:
    """Refuse a tensor that is not real floating point or holds NaN or infinity; ``where`` names it."""
    if not tensor.dtype.is_floating_point:
        raise UsageError(f"{where} is a {str(tensor.dtype).removeprefix('torch.')} tensor: expected real "
                         "floating-point values (float16, bfloat16, float32 or float64)")
    bad = (~torch.isfinite(tensor.float())).nonzero()  # as computed with: a float64 beyond float32's range is inf
    if len(bad):
        first, many = tuple(bad[0].tolist()), len(bad) > 1
        raise UsageError(f"{where} holds {len(bad)} value{'s that are' if many else ' that is'} not finite as "
                         f"float32 (the first, at {list(first)}, is {float(tensor[first]):g}): expected finite values")
