"""Devices and dtypes by name, checked in one place: where options are made from flags, batch files or
code (the language-model options, the ViT options, the trainer's config). Later code takes the
checked name and only asks whether this machine has that device (``models.loading.resolve_device``).
Imports no torch: ``--help`` and batch validation stay cheap."""

from __future__ import annotations

from .errors import UsageError

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPE_NAMES = ("float32", "float16", "bfloat16")


def check_device(name: str, accepted: tuple[str, ...] = DEVICE_NAMES) -> str:
    """``name`` if it is one of ``accepted`` (``cuda:N``: any index), else one line naming both."""
    plain = name in accepted and name != "cuda:N"
    indexed = "cuda:N" in accepted and name.startswith("cuda:") and name[5:].isdigit()
    if not (plain or indexed):
        raise UsageError(f"unknown device {name!r}: expected one of {', '.join(accepted)}")
    return name


def check_dtype(name: str) -> str:
    if name not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {name!r}: expected one of {', '.join(DTYPE_NAMES)}")
    return name
