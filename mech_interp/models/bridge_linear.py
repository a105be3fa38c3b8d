"""Projections of a TransformerBridge that call their HF linear layer directly when nobody hooks them.

Each bridge ``LinearBridge`` (q/k/v/o and the MLP's projections: seven a layer on Llama) runs, per call, the
bridge's offload alignment (a context manager asking accelerate whether the weights are offloaded), its own
``nn.Module`` dispatch and two more for ``hook_in`` and ``hook_out``, before and after the one ``nn.Linear`` that
does the work. With nothing hooked that is ~20 ms of a SmolLM2-135M forward (~1.5% at 512 tokens). A projection
switched to the subclass here calls the HF module straight away, and sets the flag the bridge's attention reads to
know that ``hook_out`` ran, whenever the call takes one tensor and neither it, its hook points nor any global module
hook has a hook, nothing asked it to skip ``hook_in``, and its weights carry no accelerate hook (an offloaded or
dispatched layer keeps the bridge's own path, which moves them). Otherwise, it takes the bridge's own path.
Part of the bridge's fast paths (``load_model(..., fast_paths=True)``); the output is the HF module's own.
"""

from __future__ import annotations

import torch
from torch.nn.modules import module as torch_module

from .hooked_model import has_hooks


def _global_hooks() -> bool:
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks)


def _call(self, input, *args, **kwargs):
    modules = self._modules
    original = modules.get("_original_component")
    if (args or kwargs or original is None or self._suppress_next_hook_in or "_hf_hook" in original.__dict__
            or has_hooks(self) or has_hooks(modules["hook_in"]) or has_hooks(modules["hook_out"]) or _global_hooks()):
        return _PLAIN[type(self)].__call__(self, input, *args, **kwargs)
    object.__setattr__(self, "_fired_hook_out", True)
    return original(input)  # [..., d_out]


_FAST: dict[type, type] = {}
_PLAIN: dict[type, type] = {}


def enable_bridge_linear_fast_path(model: torch.nn.Module) -> int:
    """Switch every plain ``LinearBridge`` of the bridge to the subclass (idempotent); returns how many there are."""
    from transformer_lens.model_bridge.generalized_components.linear import LinearBridge

    count = 0
    for module in model.modules():
        cls = type(module)
        if cls in _PLAIN:
            count += 1
            continue
        if cls is not LinearBridge:  # subclasses (joint qkv, Conv1D, ...) do more than call the HF module
            continue
        if cls not in _FAST:
            fast = type(f"Direct{cls.__name__}", (cls,), {"__call__": _call, "__module__": __name__})
            _FAST[cls], _PLAIN[fast] = fast, cls
        module.__class__ = _FAST[cls]
        count += 1
    return count


def disable_bridge_linear_fast_path(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if type(module) in _PLAIN:
            module.__class__ = _PLAIN[type(module)]
    return model
