"""The memory a statistics pass needs under each placement of a model, from its shape alone.

Weights: parameters x bytes per parameter of the run's dtype, per block and for the embeddings and head.
Activations of one batch (tokens ``T = batch x seq_len``, ``b`` bytes per value): four hidden states of the
block being run (its input, the normalised input, the attention output, its output), the queries, keys,
values and per-head outputs, three ``d_mlp``-wide MLP intermediates per routed expert (gate, up, their
product), and the recorder's two float32 copies of one hidden state (|a| and its selection). Attention scores
are counted only for a pass that reads the pattern (``with_pattern``: eager attention's scores, masked scores and
probabilities of every head, ``seq x seq`` each, in the run dtype and float32); otherwise the fast paths run the fused
kernel, which forms no ``seq x seq`` pattern.

Placements:
- ``whole``: every weight on the device, plus one batch's activations;
- ``streamed``: the residual stream of every window, plus either the embeddings (while the windows are embedded)
  or the largest block's weights and one batch's activations (while a block runs), whichever is more; a statistics
  pass never needs the head; a perplexity pass (``with_head``) also reads the final norm and the LM head after the
  last block and forms one batch's logits, in the run dtype and twice in float32 (the log-softmax);
- ``spilled``: streamed with the residual streams on disk between blocks (``residual_streams``): the embeddings and
  one batch's stream, or the largest block's weights and one batch's activations.
Both add ``RUNTIME_BYTES``: what torch and transformers initialise on a process' first forward (kernels, lazily
imported modules; 12 MiB measured on the CPU, gone from a second pass in the same process).
The process itself (Python, torch and transformers, ~0.5-1 GiB on the CPU) comes on top of either.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...validation.errors import UsageError
from .model_shape import ModelShape

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
PLACEMENTS = ("whole", "streamed", "spilled")
RUNTIME_BYTES = 16 * 2**20


@dataclass(frozen=True)
class MemoryPlan:
    shape: ModelShape
    dtype: str
    seq_len: int
    batch_size: int
    n_windows: int  # windows in flight when streamed (the run's sequences)
    with_head: bool = False  # the pass computes logits (perplexity), not only hidden states
    with_pattern: bool = False  # the pass reads attention patterns (head scores): eager attention's seq x seq scores

    @property
    def logit_bytes(self) -> int:
        """One batch's logits (run dtype), their float32 log-softmax and its copy, when the pass needs the head."""
        tokens = self.batch * self.seq_len
        return tokens * self.shape.d_vocab * (self.bytes_per_value + 8) if self.with_head else 0

    @property
    def head_stage_bytes(self) -> int:
        """The final norm and LM head (the embeddings again when tied) and one batch's logits; 0 without the head."""
        if not self.with_head:
            return 0
        tied = self.head_bytes < self.embed_bytes // 2  # a tied head counts only its norm
        return self.head_bytes + (self.embed_bytes if tied else 0) + self.logit_bytes

    @property
    def batch(self) -> int:
        """Windows per forward: the batch size, or all the windows when there are fewer."""
        return min(self.batch_size, self.n_windows)

    @property
    def bytes_per_value(self) -> int:
        return BYTES[self.dtype]

    @property
    def block_bytes(self) -> tuple[int, ...]:
        return tuple(n * self.bytes_per_value for n in self.shape.block_params)

    @property
    def embed_bytes(self) -> int:
        return self.shape.embed_params * self.bytes_per_value

    @property
    def head_bytes(self) -> int:
        return self.shape.head_params * self.bytes_per_value

    @property
    def weight_bytes(self) -> int:
        return self.shape.n_params * self.bytes_per_value

    @property
    def activation_bytes(self) -> int:
        """One batch's activations while a block runs (see the module's docstring)."""
        s, b, tokens = self.shape, self.bytes_per_value, self.batch * self.seq_len
        attention = (s.n_heads + 2 * s.n_kv_heads + s.n_heads) * s.d_head
        mlp = 3 * s.d_mlp * s.n_experts_per_token
        pattern = s.n_heads * self.seq_len * (3 * b + 4) if self.with_pattern else 0  # per query token
        return tokens * ((4 * s.d_model + attention + mlp) * b + 2 * s.d_model * 4 + pattern)

    @property
    def batch_stream_bytes(self) -> int:
        """One batch's residual stream: what a spilled pass holds beside the embeddings."""
        return self.batch * self.seq_len * self.shape.d_model * self.bytes_per_value

    @property
    def resident_bytes(self) -> int:
        """The residual stream of every window between two blocks of a streamed pass."""
        return self.n_windows * self.seq_len * self.shape.d_model * self.bytes_per_value

    def peak(self, placement: str) -> int:
        if placement == "whole":
            return RUNTIME_BYTES + self.weight_bytes + max(self.activation_bytes, self.logit_bytes)
        if placement == "streamed":  # the embedding stage, the largest block's, or the head's
            return RUNTIME_BYTES + self.resident_bytes + max(self.embed_bytes, self.head_stage_bytes,
                                                             max(self.block_bytes) + self.activation_bytes)
        if placement == "spilled":
            return RUNTIME_BYTES + max(self.embed_bytes + self.batch_stream_bytes, self.head_stage_bytes,
                                       max(self.block_bytes) + self.activation_bytes)
        raise ValueError(f"unknown placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")

    def choose(self, budget: int) -> str:
        """The first placement that fits ``budget`` bytes; one-line refusal when none does."""
        for placement in PLACEMENTS:
            if self.peak(placement) <= budget:
                return placement
        raise self.too_small(budget)

    def too_small(self, budget: int) -> UsageError:
        """The one-line refusal of a budget that no placement fits."""
        from .memory_units import format_bytes

        return UsageError(f"{self.shape.name} does not fit {format_bytes(budget)} even streamed (it needs "
                          f"{format_bytes(min(map(self.peak, PLACEMENTS)))} with its residual streams on disk: the "
                          "embeddings or one block with one batch's activations): allow more memory, or run smaller "
                          "batches or shorter windows")
