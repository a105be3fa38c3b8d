"""The attention variants, as subclasses of TransformerLens' ``Attention`` (same parameters, same hook points).

- ``CausalAttention`` (variant ``default``): standard GPT-2 attention. It differs from TransformerLens' class
  only in speed: when a call can take mech_interp's fused path (``fused_attention.fusable_call``: nothing hooks
  ``hook_attn_scores``/``hook_pattern``, no cache or mask) it calls the same causal kernel
  (``fused_attention.causal_attention``), else TransformerLens' explicit path, with the same values.
- ``SlotAttention`` (variant ``attn_bias``, paper Sec. 4.3): per head a learnable key ``k_slot`` and value
  ``v_slot`` (``[n_heads, d_head]``, init N(0, 0.02)) in front of K and V, visible to every query:
  ``softmax(q [k'; K]^T / sqrt(d_head)) [v'; V]``. ``n_key_slots = 1`` (convention 1 of the project):
  ``hook_attn_scores`` and ``hook_pattern`` have one extra key column IN FRONT (column 0 is the slot, column
  1 + k is position k); ``hook_k``/``hook_v`` hold the sequence positions only. The fused path keeps the causal
  kernel by running the slot as an extra leading position (a dummy query row that is dropped), as the kv-bias
  models of sail-sg/Attention-Sink do: with T + 1 queries and keys, query 1 + t sees keys 0..1 + t, i.e. the
  slot and positions 0..t, with no explicit boolean mask.
- ``GatedAttention`` (variant ``gated``, Qiu et al. 2025 "Gated Attention", head-wise): each head's output is
  multiplied by ``sigmoid(x W_gate + b_gate)``, computed from the attention's (normalised) input ``x``, before
  ``W_O``. ``hook_gate`` [batch, pos, head_index] holds the gate; ``hook_z`` holds the GATED head outputs, so
  zeroing ``hook_z[:, :, h]`` still removes head h.

None of these is in ``mech_interp.models.fused_attention.FUSED_CLASSES`` (an exact-type lookup), so
``enable_fused_attention`` never swaps them for a class without their slot or gate; each owns its fast path,
built from that module's pieces (the test of a call, the kernel, the output projection).
A KV cache (``generate(use_past_kv_cache=True)``) is refused by the slot class and on the sink variant rather than
computed wrong: call ``generate(..., use_past_kv_cache=False)``; the default and gated variants support it.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import nn
from transformer_lens.components import Attention
from transformer_lens.hook_points import HookPoint

from mech_interp.models.fused_attention import attention_output, causal_attention, fusable_call

SLOT_INIT_STD = 0.02  # upstream gpt-2/model_attn_bias.py: torch.randn(...) * 0.02


class CausalAttention(Attention):
    """GPT-2 attention with a fused fast path whenever nobody reads the scores or the pattern."""

    n_key_slots = 0
    supports_kv_cache = True  # False for the slot, and on the sink variant's blocks (set by its builder)

    def _fast(self, past_kv_cache_entry, additive_attention_mask, attention_mask, position_bias) -> bool:
        # "standard" only: fused_z applies no rotary embedding (TransformerLens rotates after the q/k projection)
        return (self.cfg.positional_embedding_type == "standard"
                and fusable_call(self, past_kv_cache_entry, additive_attention_mask, attention_mask, position_bias))

    def _check_no_cache(self, past_kv_cache_entry) -> None:
        if past_kv_cache_entry is not None and not self.supports_kv_cache:
            raise ValueError(f"this {type(self).__name__} does not support a KV cache (its key slot or the sink "
                             "token would be cached again at every step): call generate(..., use_past_kv_cache=False)")

    def forward(
        self,
        query_input: Float[torch.Tensor, "batch pos d_model"],
        key_input: Float[torch.Tensor, "batch pos d_model"],
        value_input: Float[torch.Tensor, "batch pos d_model"],
        past_kv_cache_entry=None,
        additive_attention_mask=None,
        attention_mask: Int[torch.Tensor, "batch offset_pos"] | None = None,
        position_bias=None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        self._check_no_cache(past_kv_cache_entry)
        self._gate = self.compute_gate(query_input)
        try:
            if not self._fast(past_kv_cache_entry, additive_attention_mask, attention_mask, position_bias):
                return super().forward(query_input, key_input, value_input, past_kv_cache_entry,
                                       additive_attention_mask, attention_mask, position_bias)
            q, k, v = self.calculate_qkv_matrices(query_input, key_input, value_input)
            z = self.fused_z(q, k, v)  # [batch, pos, head_index, d_head]
            return attention_output(self, self.hook_z(self.apply_gate(z)))
        finally:
            self._gate = None

    def fused_z(
        self,
        q: Float[torch.Tensor, "batch pos head_index d_head"],
        k: Float[torch.Tensor, "batch key_pos head_index d_head"],
        v: Float[torch.Tensor, "batch key_pos head_index d_head"],
    ) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        return causal_attention(self, q, k, v)

    def compute_gate(self, query_input: torch.Tensor) -> torch.Tensor | None:
        return None

    def apply_gate(self, z: Float[torch.Tensor, "batch pos head_index d_head"]) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        return z

    def calculate_z_scores(
        self,
        v: Float[torch.Tensor, "batch key_pos head_index d_head"],
        pattern: Float[torch.Tensor, "batch head_index query_pos key_pos"],
    ) -> Float[torch.Tensor, "batch query_pos head_index d_head"]:
        # TransformerLens' explicit path: the gate (if any) goes on before hook_z, as on the fused path.
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        return self.hook_z(self.apply_gate(z))  # [batch, query_pos, head_index, d_head]


class SlotAttention(CausalAttention):
    """Attention with a learnable key/value slot in front of K and V (the paper's explicit attention bias)."""

    n_key_slots = 1
    supports_kv_cache = False

    def __init__(self, cfg, attn_type: str = "global", layer_id: int | None = None):
        super().__init__(cfg, attn_type, layer_id)
        self.k_slot = nn.Parameter(torch.randn(self.cfg.n_heads, self.cfg.d_head, dtype=self.cfg.dtype) * SLOT_INIT_STD)
        self.v_slot = nn.Parameter(torch.randn(self.cfg.n_heads, self.cfg.d_head, dtype=self.cfg.dtype) * SLOT_INIT_STD)

    def calculate_qkv_matrices(self, query_input, key_input, value_input):
        q, k, v = super().calculate_qkv_matrices(query_input, key_input, value_input)  # hook_q/k/v: T positions
        batch = k.shape[0]
        k = torch.cat([self.k_slot.to(k.dtype).expand(batch, 1, -1, -1), k], dim=1)  # [batch, 1 + pos, head, d_head]
        v = torch.cat([self.v_slot.to(v.dtype).expand(batch, 1, -1, -1), v], dim=1)  # [batch, 1 + pos, head, d_head]
        return q, k, v

    def apply_causal_mask(
        self,
        attn_scores: Float[torch.Tensor, "batch head_index pos key_pos"],
        past_kv_pos_offset: int = 0,
        attention_mask: Int[torch.Tensor, "batch offset_pos"] | None = None,
    ) -> Float[torch.Tensor, "batch head_index pos key_pos"]:
        # The slot is key column 0: shifting the queries by n_key_slots keeps it visible to every query.
        if attention_mask is not None:
            ones = attention_mask.new_ones(attention_mask.shape[0], self.n_key_slots)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        return super().apply_causal_mask(attn_scores, past_kv_pos_offset + self.n_key_slots, attention_mask)

    def fused_z(
        self,
        q: Float[torch.Tensor, "batch pos head_index d_head"],
        k: Float[torch.Tensor, "batch key_pos head_index d_head"],
        v: Float[torch.Tensor, "batch key_pos head_index d_head"],
    ) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        # A dummy leading query makes the score matrix square, so the causal kernel applies; its row is dropped.
        q = torch.cat([q.new_zeros(q.shape[0], self.n_key_slots, q.shape[2], q.shape[3]), q], dim=1)
        return super().fused_z(q, k, v)[:, self.n_key_slots:]


class GatedAttention(CausalAttention):
    """Head-wise sigmoid output gate computed from the attention input (Qiu et al. 2025)."""

    def __init__(self, cfg, attn_type: str = "global", layer_id: int | None = None):
        super().__init__(cfg, attn_type, layer_id)
        self.W_gate = nn.Parameter(torch.empty(self.cfg.d_model, self.cfg.n_heads, dtype=self.cfg.dtype))
        # Bias 0: every gate starts at 0.5; the weights are drawn by the model's initialisation (a W_ name).
        self.b_gate = nn.Parameter(torch.zeros(self.cfg.n_heads, dtype=self.cfg.dtype))
        self.hook_gate = HookPoint()  # [batch, pos, head_index]

    def compute_gate(
        self, query_input: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos head_index"]:
        return self.hook_gate(torch.sigmoid(query_input @ self.W_gate.to(query_input.dtype) + self.b_gate))

    def apply_gate(self, z: Float[torch.Tensor, "batch pos head_index d_head"]) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        return z * self._gate.to(z.dtype)[..., None]


ATTENTION_CLASSES: dict[str, type[CausalAttention]] = {
    "default": CausalAttention,
    "sink": CausalAttention,
    "attn_bias": SlotAttention,
    "gated": GatedAttention,
}
