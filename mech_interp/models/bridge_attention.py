"""Fused-kernel attention for TransformerBridge layers whose scores and pattern nobody hooks.

The bridge runs the HF model with eager attention and, for rotary families, re-implements the
attention forward step by step (scores, mask, softmax, pattern @ V) so that ``hook_attn_scores``
and ``hook_pattern`` exist; a statistics pass reads only the residual stream and pays for both.
A layer switched to the subclass here calls the HF attention module's own forward with PyTorch's
fused kernel (sdpa) instead, whenever nothing hooks the points only the explicit path forms
(scores, pattern, rotated q/k, ...) and the call carries no key/value cache the bridge would
update. The q/k/v/o projections that forward calls are the bridge's own ``LinearBridge`` modules,
so ``hook_q``/``hook_k``/``hook_v`` and ``hook_z`` fire with the same tensors; ``hook_in`` and
``hook_out`` of the attention are fired here.

Opt-in (``load_model(..., fast_paths=True)``, the CLI's default) and allow-listed: only the families
in ``architectures.BRIDGE_FUSED_ARCHITECTURES``, whose HF attention forward is q/k/v projection,
rotary, sdpa and o projection and nothing the bridge hooks separately (no q/k norms, soft-capping,
sinks, clipping or joint qkv), and which tests/test_architectures.py checks against HF with the
fused path running on TransformerLens 3.9's beta bridge and 4.3's.
"""

from __future__ import annotations

import copy

import torch

from .architectures import BRIDGE_FUSED_ARCHITECTURES
from .hooked_model import has_hooks

# Hook points of the attention a HF forward still fires (the projections' and the ones fired here).
_STILL_FIRED = ("hook_in", "hook_out")
_HF_MODULE = "_original_component"
_PROJECTIONS = ("q.", "k.", "v.", "o.", f"{_HF_MODULE}.")
# The bridge's own flags that reroute its forward through per-head inputs or outputs.
_PER_HEAD_FLAGS = ("use_split_qkv_input", "use_attn_in", "use_attn_result")



def _explicit_only_points(attn) -> list[torch.nn.Module]:
    """The hook points of ``attn`` that only its explicit path fires (scores, pattern, rotated q/k, ...). The HF
    attention module is not one: the fused path calls it, with its hooks (transformers leaves its output-capturing
    hooks there, inactive, once anything has asked for attentions: ``run_with_cache`` does)."""
    return [module for name, module in attn.named_modules()
            if name and name not in _STILL_FIRED and name != _HF_MODULE and not name.startswith(_PROJECTIONS)]


def fusable_call(attn, kwargs: dict) -> bool:
    """No hook on anything only the explicit path forms, no pattern asked for, no cache the bridge would extend, no
    per-head routing."""
    if attn.training or kwargs.get("past_key_values") is not None or kwargs.get("layer_past") is not None:
        return False
    if kwargs.get("output_attentions"):  # the caller wants the pattern returned, which only the explicit path forms
        return False
    if any(getattr(attn.config, flag, False) for flag in _PER_HEAD_FLAGS):
        return False
    points = attn.__dict__.get("_explicit_only_points")  # listed once: walking the modules per call cost ~3%
    if points is None:
        points = attn.__dict__["_explicit_only_points"] = _explicit_only_points(attn)
    return not any(has_hooks(module) for module in points)


def pure_causal(mask: torch.Tensor | None) -> bool:
    """Whether ``mask`` (HF's eager mask: 0 where a query may attend, a large negative number elsewhere, or a
    boolean "may attend") is exactly the causal mask of a square block, so the kernel's ``is_causal`` can replace it.
    HF builds one mask per forward and hands it to every layer: the answer for the last one seen is kept."""
    if mask is None:
        return True
    if _last_checked[0] is mask:
        return _last_checked[1]
    causal = mask.dim() == 4 and mask.shape[-1] == mask.shape[-2]
    if causal:
        allowed = mask if mask.dtype == torch.bool else mask == 0
        n = mask.shape[-1]
        causal = bool((allowed == torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()).all())
    _last_checked[:] = [mask, causal]
    return causal


_last_checked: list = [None, False]  # (the last mask checked, its answer): one check per forward, not per layer


def _fused_forward(self, *args, **kwargs):
    if not fusable_call(self, kwargs) or not pure_causal(kwargs.get("attention_mask")):
        return _PLAIN[type(self)].forward(self, *args, **kwargs)
    if "hidden_states" in kwargs:
        hidden_states = kwargs.pop("hidden_states")
    else:
        hidden_states, args = args[0], args[1:]
    kwargs["attention_mask"] = None  # pure causal: the kernel masks it itself (is_causal)
    kwargs.pop("cache", None)  # what transformers 5 calls the cache; the bridge's own path never extends it either
    hidden_states = self.hook_in(hidden_states)  # [batch, pos, d_model]
    attn_output, _ = self.original_component(hidden_states, *args, **kwargs)
    return self.hook_out(attn_output), None  # [batch, pos, d_model]; no pattern was formed


_FUSED_CLASSES: dict[type, type] = {}  # bridge attention class -> its subclass with the fused path
_PLAIN: dict[type, type] = {}


def _fused_class(cls: type) -> type:
    if cls not in _FUSED_CLASSES:
        fused = type(f"Fused{cls.__name__}", (cls,), {"forward": _fused_forward, "__module__": __name__})
        _FUSED_CLASSES[cls], _PLAIN[fused] = fused, cls
    return _FUSED_CLASSES[cls]


def enable_bridge_fast_path(model) -> list[int]:
    """Switch every block of an allow-listed family to the fused path (idempotent); returns the blocks that have it.
    Each switched HF attention module gets its own copy of the config, saying sdpa, so that the bridge's explicit
    path (which reads nothing of it but rotary settings) and the HF forward can both run."""
    fused = []
    if model.cfg.original_architecture not in BRIDGE_FUSED_ARCHITECTURES:
        return fused
    for i, block in enumerate(model.blocks):
        attn = block.attn
        hf_attn = getattr(attn, "original_component", None)
        if type(attn) in _PLAIN:
            fused.append(i)
            continue
        if hf_attn is None:
            continue
        config = copy.copy(hf_attn.config)
        config._attn_implementation = "sdpa"
        hf_attn.config = config
        attn.__class__ = _fused_class(type(attn))
        fused.append(i)
    return fused


def disable_bridge_fast_path(model):
    """Every block back to the bridge's explicit attention (the HF modules keep their sdpa config copy, which that
    path does not read)."""
    for block in model.blocks:
        if type(block.attn) in _PLAIN:
            block.attn.__class__ = _PLAIN[type(block.attn)]
    return model
