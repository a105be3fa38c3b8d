"""Window attention as an intervention on the model's own attention scores: which keys each query may see.

``allowed_keys`` is the mask: query q may attend to key k iff k <= q and (q - k < W, or k < S, or k is a kept
token). ``WindowMask`` applies it at one block's ``attn.hook_attn_scores`` (scores [batch, head_index, query_pos,
key_pos], after the model's causal mask, before its softmax), so the model computes everything else as it always
does: rotary or learned positions stay the original absolute ones (token t is at position t in every condition).
Hooking the scores also takes each engine off its fused kernel, which never forms them (``fused_attention``,
``bridge_attention``), so the mask is seen by every block.

Residual positions the text did not produce (a trained model's learned prefix vectors) and extra key slots sit in
front of the text's positions in the scores; they are part of the model, not of the text, and stay visible.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float

from ...core.intervention import Intervention
from ...models.hook_names import act_name


def allowed_keys(
    n_pos: int,
    window: int,
    n_sinks: int = 0,
    kept: Bool[torch.Tensor, "batch pos"] | None = None,
    device: torch.device | str | None = None,
) -> Bool[torch.Tensor, "batch query_pos key_pos"]:
    """True where query q may attend to key k: k <= q and (q - k < ``window`` or k < ``n_sinks`` or ``kept[k]``).
    Without ``kept`` the batch dim is 1 (one mask for every sequence)."""
    q = torch.arange(n_pos, device=device)[:, None]
    k = torch.arange(n_pos, device=device)[None, :]
    causal = k <= q
    allowed = (causal & ((q - k < window) | (k < n_sinks)))[None]  # [1, query_pos, key_pos]
    if kept is not None:
        allowed = allowed | (causal[None] & kept.to(device)[:, None, :])  # a kept key column, below the diagonal
    return allowed


class WindowMask(Intervention):
    """Sets the scores of the keys ``allowed`` leaves out to -inf at one block, so the softmax gives them nothing."""

    def __init__(self, layer: int, allowed: Bool[torch.Tensor, "batch query_pos key_pos"]) -> None:
        super().__init__("window_mask", act_name("attn_scores", layer))
        self.register_buffer("allowed", allowed)  # shared by every block's mask, not copied

    def forward(self, scores: Float[torch.Tensor, "batch head_index query_pos key_pos"],
                hook: Any = None) -> Float[torch.Tensor, "batch head_index query_pos key_pos"]:
        allowed = self.allowed
        extra_queries, extra_keys = scores.shape[-2] - allowed.shape[-2], scores.shape[-1] - allowed.shape[-1]
        if extra_queries or extra_keys:  # learned prefix positions and key slots in front: the model's own mask holds
            allowed = torch.nn.functional.pad(allowed, (extra_keys, 0, extra_queries, 0), value=True)
        return scores.where(allowed[:, None].to(scores.device), float("-inf"))


def window_masks(n_layers: int, allowed: Bool[torch.Tensor, "batch query_pos key_pos"]) -> list[WindowMask]:
    """The same mask at every block, as one intervention per block (their hooks go into one forward)."""
    return [WindowMask(layer, allowed) for layer in range(n_layers)]
