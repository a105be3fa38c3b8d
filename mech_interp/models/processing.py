"""TransformerLens' weight processing, as the hooked_transformer engine applies it on request (imports nothing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Processing:
    """TransformerLens weight processing; all off keeps activations equal to the HF model's. The
    transformer_bridge engine runs the HF weights as they are and accepts only all off."""

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False
    refactor_factored_attn_matrices: bool = False
