"""Lay TransformerLens weights out in memory as Hugging Face does, so that no forward copies them.

TransformerLens keeps W_Q/W_K/W_V as ``[head_index, d_model, d_head]``, gated-MLP weights and W_U as
``[d_in, d_out]``, and on every forward turns them into contiguous ``[d_out, d_in]`` copies for
``F.linear`` (``simple_attn_linear``'s rearrange, ``GatedMLP``'s and ``Unembed``'s ``W.T.contiguous()``): ~150 ms of
a 1.15 s SmolLM2-135M forward on one CPU thread, and a full extra copy of the weights in flight on a
large model. Giving each parameter the strides of that contiguous form keeps its shape, values and
name (hooks, ``model.W_Q``, in-place edits and ``state_dict`` all work as before) and turns those
copies into views; the matmuls then see the same memory layout as HF's ``nn.Linear``.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer
from transformer_lens.components.mlps.gated_mlp import GatedMLP

_ATTN = ("W_Q", "W_K", "W_V", "_W_K", "_W_V")  # [head_index, d_model, d_head]; _W_K/_W_V under GQA
_GATED_MLP = ("W_gate", "W_in", "W_out")  # [d_in, d_out]


def _relayout(param: torch.nn.Parameter, perm: tuple[int, ...]) -> None:
    # perm is its own inverse: the values and shape stay, the storage becomes permute(perm)-contiguous
    param.data = param.data.permute(perm).contiguous().permute(perm)


def use_linear_layout(model: HookedTransformer) -> HookedTransformer:
    """Re-lay the attention and gated-MLP weights of every block in place (idempotent)."""
    for block in model.blocks:
        for name in _ATTN:
            param = block.attn._parameters.get(name)
            if param is not None and param.dim() == 3:
                _relayout(param, (0, 2, 1))
        if isinstance(block.mlp, GatedMLP):
            for name in _GATED_MLP:
                _relayout(getattr(block.mlp, name), (1, 0))
    unembed = getattr(model, "unembed", None)
    if unembed is not None and unembed.W_U.dim() == 2:
        _relayout(unembed.W_U, (1, 0))  # [d_model, d_vocab]: 113 MB copied per forward on SmolLM2 otherwise
    return model
