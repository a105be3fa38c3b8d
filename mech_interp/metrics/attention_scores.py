"""Per-head attention scores on post-softmax patterns, and the sink share of Gu et al. (2024).

Definitions (the ones the attention experiment prints and names its columns after):

- **key score** of head h for key position k: the mean, over the queries q > k of each sequence, of
  ``pattern[q, k]``, then averaged over sequences. Only strictly later queries count: query k's
  attention to itself, and queries before k (which cannot see it), are left out; in particular
  query 0's attention to token 0, which is 1 by construction, never inflates the first-token score.
- **massive-set score** of head h: over the queries q that have at least one massive key k < q,
  the mean of ``sum over those keys of pattern[q, k]``, then averaged over the sequences that have
  such a query. The massive keys are passed per sequence (the caller detects them at the input of
  the layer whose pattern this is). No such query at all: NaN.
- **sink share** (Gu et al. 2024, "When Attention Sink Emerges"): the share of heads whose
  first-token key score exceeds ``eps`` (they use 0.3), per layer and over all heads.
- **slot attention** (models with extra key slots, e.g. a learned k'/v' attention bias): a model
  whose layout has ``n_key_slots > 0`` (``core.token_layout``) has that many key columns in front of
  the positions in every pattern; its slot attention is the mean over queries of the attention summed
  over the slots. Slots are never counted as token 0: every score above is taken on
  ``token_keys(pattern, layout.n_key_slots)``.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float

SINK_DEFINITION = "share of heads whose mean attention to token 0, over the queries q > 0, exceeds eps"


def token_keys(pattern: Float[torch.Tensor, "batch head query key"], n_slots: int) -> Float[torch.Tensor, "batch head query pos"]:
    """The key columns that are sequence positions: column ``n_slots + k`` is position k."""
    return pattern[..., n_slots:]


def slot_attention(pattern: Float[torch.Tensor, "batch head query key"], n_slots: int) -> Float[torch.Tensor, "head"]:
    """Mean over queries (and the batch) of the attention summed over the ``n_slots`` key slots; 0 without slots."""
    if n_slots == 0:
        return pattern.new_zeros(pattern.shape[1], dtype=torch.float32)
    return pattern[..., :n_slots].float().sum(-1).mean(-1).mean(0)


def key_score(pattern: Float[torch.Tensor, "batch head query key"], key: int) -> Float[torch.Tensor, "head"]:
    """Mean attention of every head to ``key`` from the queries strictly after it, averaged over
    the batch. NaN when no query comes after ``key``."""
    if not 0 <= key < pattern.shape[3]:
        raise ValueError(f"key position {key} out of range: the pattern has {pattern.shape[3]} keys")
    later = pattern[:, :, key + 1:, key].float()  # [batch, head, query > key]
    if later.shape[2] == 0:
        return torch.full((pattern.shape[1],), float("nan"), device=pattern.device)
    return later.mean(2).mean(0)


def massive_set_score_per_sequence(
    pattern: Float[torch.Tensor, "batch head query key"], massive: Bool[torch.Tensor, "batch key"]
) -> Float[torch.Tensor, "batch head"]:
    """Per sequence: mean, over the queries q that see at least one massive key k < q, of the
    attention summed over those keys. NaN for a sequence without such a query."""
    n_query, n_key = pattern.shape[2], pattern.shape[3]
    earlier = torch.ones(n_query, n_key, dtype=torch.bool, device=pattern.device).tril(-1)  # k < q
    keys = earlier[None] & massive[:, None, :].to(pattern.device)  # [batch, query, key]
    mass = (pattern.float() * keys[:, None]).sum(-1)  # [batch, head, query]
    counted = keys.any(-1)  # [batch, query]: queries with a massive key before them
    n_counted = counted.sum(-1)  # [batch]
    return (mass * counted[:, None]).sum(-1) / n_counted[:, None]  # NaN for a sequence without any


def massive_set_score(
    pattern: Float[torch.Tensor, "batch head query key"], massive: Bool[torch.Tensor, "batch key"]
) -> Float[torch.Tensor, "head"]:
    """Mean, over the queries q that see at least one massive key k < q, of the attention summed over
    those keys; averaged over the sequences that have such a query. NaN when none has."""
    per_sequence = massive_set_score_per_sequence(pattern, massive)
    return per_sequence[~per_sequence[:, 0].isnan()].mean(0)


def sink_share(
    first_scores: Float[torch.Tensor, "layer head"], eps: float
) -> tuple[Float[torch.Tensor, "layer"], float]:
    """Share of heads with first-token key score > ``eps``: per layer, and over all heads."""
    sinks = (first_scores > eps).float()
    return sinks.mean(1), float(sinks.mean())
