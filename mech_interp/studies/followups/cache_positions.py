"""StreamingLLM's positions (Xiao et al. 2024, Sec. 3.2): "positions within the cache rather than those in the
original text", in one forward.

StreamingLLM keeps the first S tokens and the last W in its key/value cache and rotates every cached key with its
index in the cache (pre-rotary keys are cached). For query q the cache is [kept keys outside the window, in order;
the window q-W+1..q], so the query sits at index n + W - 1 (n: how many kept keys lie outside its window) and the
window keys keep their distance q - k to it; only a kept key outside the window moves: at cache index r (its rank
among them) its distance is n + W - 1 - r instead of q - k. Every state a query reads was computed when its token was
the query, with the cache of that step, which is what the masked forward computes for every position at once; so the
one forward equals the token-by-token streaming run when those scores alone are recomputed.

A rotary score depends on the distance only, and rotations compose (R(d) R(b) = R(b + d)), so the score of query q
(rotated at q) and kept key k at cache distance D is the model's rotated query against the model's rotated key turned
further by d = (q - k) - D >= 0 (a kept key is never
nearer in the text than in the cache): ``hook_rot_q`` and ``hook_rot_k`` are read in the same forward (after any q/k
norm or clipping the model applies), the key turned by the layer's own rotary tables, and the product scaled (and
soft-capped) as ``calculate_attention_scores`` does. TransformerLens' HookedTransformer only: the bridge runs HF's
attention, whose rotary is not a hook point; and only where the rotation is all that depends on position (no log-n
query scaling, no rotary rescaled with the length).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from ...models.hook_names import act_name

REFUSED = "--positions cache needs a HookedTransformer with rotary positions (StreamingLLM's scheme rotates keys by " \
          "their index in the cache)"


def cache_distances(allowed: Bool[torch.Tensor, "batch query_pos key_pos"],
                    window: int) -> Int[torch.Tensor, "batch query_pos key_pos"]:
    """For each allowed key outside its query's window, its distance to the query in StreamingLLM's cache
    (``n + W - 1 - r``); -1 everywhere else."""
    n_pos = allowed.shape[-1]
    q = torch.arange(n_pos, device=allowed.device)[:, None]
    k = torch.arange(n_pos, device=allowed.device)[None, :]
    outside = allowed & (q - k >= window)  # kept keys the window does not hold: they sit first in the cache
    rank = outside.long().cumsum(-1) - 1
    n = outside.sum(-1, keepdim=True)
    return torch.where(outside, n + window - 1 - rank, torch.full_like(rank, -1))


class CacheScores:
    """One block's attention scores of the kept keys outside the window, recomputed at their cache distance: hooks
    on ``hook_rot_q`` and ``hook_rot_k`` keep the block's rotated queries and keys, and the one on
    ``hook_attn_scores`` replaces those scores (before the window's mask, which leaves them as they are)."""

    def __init__(self, attn: Any, layer: int, distances: Int[torch.Tensor, "batch query_pos key_pos"]) -> None:
        self.attn, self.layer, self.distances = attn, layer, distances
        self.rot_q: torch.Tensor | None = None
        self.rot_k: torch.Tensor | None = None

    def hooks(self) -> list[tuple[str, Any]]:
        return [(act_name("rot_q", self.layer), self._keep_q), (act_name("rot_k", self.layer), self._keep_k),
                (act_name("attn_scores", self.layer), self._rescore)]

    def _keep_q(self, q: Float[torch.Tensor, "batch pos head_index d_head"], hook: Any = None) -> None:
        self.rot_q = q

    def _keep_k(self, k: Float[torch.Tensor, "batch pos kv_head_index d_head"], hook: Any = None) -> None:
        self.rot_k = k

    def _turned(self, x: Float[torch.Tensor, "entries kv_head_index d_head"],
                by: Int[torch.Tensor, " entries"]) -> Float[torch.Tensor, "entries kv_head_index d_head"]:
        """``x`` rotated further by ``by`` positions, as the layer's ``apply_rotary`` rotates (its tables, its pairing
        of dims, its rotary part of d_head)."""
        attn, dims = self.attn, self.attn.cfg.rotary_dim
        part, rest = x[..., :dims], x[..., dims:]
        cos = attn.rotary_cos[by.to(attn.rotary_cos.device)][:, None, :].to(x.device)
        sin = attn.rotary_sin[by.to(attn.rotary_sin.device)][:, None, :].to(x.device)
        return torch.cat([part * cos + attn.rotate_every_two(part) * sin, rest], dim=-1).to(x.dtype)

    def _rescore(self, scores: Float[torch.Tensor, "batch head_index query_pos key_pos"],
                 hook: Any = None) -> Float[torch.Tensor, "batch head_index query_pos key_pos"]:
        attn, q, k = self.attn, self.rot_q, self.rot_k
        self.rot_q = self.rot_k = None
        if scores.shape[-2:] != self.distances.shape[-2:]:  # learned prefix positions or key slots: not rotary text
            raise ValueError(f"scores {tuple(scores.shape)} do not match the text's positions "
                             f"{tuple(self.distances.shape)}")
        distances = self.distances.to(scores.device).expand(scores.shape[0], -1, -1)
        b, qi, ki = (distances >= 0).nonzero(as_tuple=True)
        key = self._turned(k[b, ki], (qi - ki) - distances[b, qi, ki])  # [entries, kv_head_index, d_head]
        query = q[b, qi]  # [entries, head_index, d_head]
        if key.shape[1] != query.shape[1]:  # grouped keys serve head_index // kv_head_index queries each
            key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        new = (query * key.to(query.dtype)).sum(-1) / attn.attn_scale  # [entries, head_index]
        cap = attn.cfg.attn_scores_soft_cap
        if cap and cap > 0:
            new = cap * torch.tanh(new / cap)
        scores = scores.clone()
        scores[b, :, qi, ki] = new.to(scores.dtype)
        return scores


def cache_score_hooks(model: Any, allowed: Bool[torch.Tensor, "batch query_pos key_pos"],
                      window: int) -> list[tuple[str, Any]]:
    """The hooks of every block (``CacheScores``), to go with the window's mask in one forward."""
    distances = cache_distances(allowed, window)
    if not bool((distances >= 0).any()):
        return []  # no kept key outside any window: the text's positions are the cache's
    return [hook for layer, block in enumerate(model.blocks)
            for hook in CacheScores(block.attn, layer, distances).hooks()]


def check_cache_positions(model: Any) -> None:
    """Refuse (ValueError's message is the caller's refusal) a model this scheme cannot be computed on."""
    try:
        from transformer_lens import HookedTransformer
    except ImportError:  # TransformerLens 4: the bridge only
        raise ValueError(REFUSED) from None
    cfg = model.cfg
    if not isinstance(model, HookedTransformer) or cfg.positional_embedding_type != "rotary" \
            or cfg.use_logn_attn or getattr(cfg, "use_dynamic_ntk_rope", False):
        raise ValueError(REFUSED)
