"""Massive activations in language models, measured through TransformerLens hook points.

``import mech_interp`` does no work: the names below are imported on first use, so the CLI's
``--help`` and the shared core never pay for torch, transformers or TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import Any

from .compat.torchvision import install as _install_torchvision_compat

_install_torchvision_compat()

_EXPORTS = {
    "UsageError": "mech_interp.validation.errors",
    "DEFAULT_MODEL": "mech_interp.models.registry",
    "list_models": "mech_interp.models.registry",
    "register_model": "mech_interp.models.registry",
    "Processing": "mech_interp.models.processing",
    "load_hf": "mech_interp.models.hf_loading",
    "load_model": "mech_interp.models.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mech_interp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
