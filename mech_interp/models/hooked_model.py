"""The type of a loaded language model, whichever engine built it.

A ``HookedTransformer`` (TransformerLens 3) and a ``TransformerBridge`` (TransformerLens 4) are both
``torch.nn.Module``s with the same hook names, ``hooks``/``run_with_hooks``/``run_with_cache``,
``cfg``, ``blocks[i].attn``/``.mlp`` and the weight views the studies read (``W_O``, ``W_out``); the
annotation names the common base class so that it resolves, and is checked, with either installed.
"""

from __future__ import annotations

import torch

HookedModel = torch.nn.Module


def has_hooks(module: torch.nn.Module) -> bool:
    """Whether anything is hooked on ``module`` itself: what the fast paths check before they skip a computation
    whose hook points would otherwise fire."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)
