"""The model variants and what they add to GPT-2, readable without importing torch (``--help``, configs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    doc: str
    n_prefix_tokens: int = 0
    n_key_slots: int = 0


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("default", "GPT-2 as is"),
    Variant("sink", "a learnable sink token prepended after the embeddings (no position embedding), dropped "
                    "before the unembedding", n_prefix_tokens=1),
    Variant("attn_bias", "per layer and head a learnable key/value slot k', v' in front of K and V, visible to "
                         "every query (paper Sec. 4.3)", n_key_slots=1),
    Variant("gated", "a sigmoid gate per head on the attention output, from the attention input (Qiu et al. 2025)"),
)}
