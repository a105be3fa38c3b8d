"""Massive activations in language models, measured through TransformerLens hook points.

The library's face, one ``import mech_interp as mi`` away:

- ``mi.load_model(spec)``: a registered name, local HF directory, GGUF file or hub name as a HookedTransformer (or a
  TransformerBridge on TransformerLens 4), activations equal to HF's;
- ``mi.load_text(name)`` and ``mi.windows(tokenizer, text, seq_len, n_windows)``: token windows of a text;
- ``mi.layer_stats(model, batches)``: top-k, median and massive entries of every block's residual stream;
- ``mi.interventions``: ``set_zero``, ``set_mean``, ``ablate_head``, ``ablate_heads`` as hooks that compose;
- ``mi.perplexity(model, windows, hooks)``;
- ``mi.run(experiment, model, **settings)``: any experiment of the studies, as the command line runs it.

``import mech_interp`` does no work: the names are imported on first use, so the CLI's ``--help`` and the shared core
never pay for torch, transformers or TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import Any

from .compat.torchvision import install as _install_torchvision_compat

_install_torchvision_compat()

# name -> "module" (its attribute of the same name) or "module:attribute"
_EXPORTS = {
    "UsageError": "mech_interp.validation.errors",
    "DEFAULT_MODEL": "mech_interp.models.registry",
    "list_models": "mech_interp.models.registry",
    "register_model": "mech_interp.models.registry",
    "Processing": "mech_interp.models.processing",
    "load_hf": "mech_interp.models.hf_loading",
    "load_model": "mech_interp.models.loading",
    "load_text": "mech_interp.data.texts",
    "windows": "mech_interp.data.tokens",
    "layer_stats": "mech_interp.metrics.layer_stats:collect_layer_stats",
    "perplexity": "mech_interp.metrics.perplexity",
    "run": "mech_interp.runs.one_run",
}
_MODULES = {"interventions": "mech_interp.interventions"}  # name -> a module of the face

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        module, _, attribute = _EXPORTS[name].partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
    else:
        raise AttributeError(f"module 'mech_interp' has no attribute {name!r}")
    globals()[name] = value
    return value
