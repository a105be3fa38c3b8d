#!/usr/bin/env python3
"""Print the docs' table of supported model families (docs/running/models.md), written from the tables the loaders use
(``mech_interp.models.architectures``): which engine loads each family, where attention runs fused,
which GGUF architecture reads into it, which families a run can stream one block at a time
(``models.placement.weight_source.STREAMABLE``). tests/test_architectures.py checks every engine claim
against HF on each engine installed where it runs, and that docs/running/models.md holds what this prints;
tests/test_streamed_pass.py and tests/test_streamed_sites.py check the streamed column.

    python scripts/families_table.py
"""

from __future__ import annotations

from mech_interp.models.architectures import (
    BETA_BRIDGE_GAPS,
    BRIDGE_FUSED_ARCHITECTURES,
    ENGINE_FAMILIES,
    FUSED_ARCHITECTURES,
    GGUF_ARCHITECTURES,
    SUPPORTED,
)
from mech_interp.models.engines import HOOKED_TRANSFORMER, TRANSFORMER_BRIDGE
from mech_interp.models.placement.weight_source import STREAMABLE

# What a user of a family should know beyond the columns (documentation, not a support claim).
CAVEATS = {
    "GPTNeoForCausalLM": "local layers take the explicit path",
    "BloomForCausalLM": "ALiBi",
    "LlamaForCausalLM": "hooked_transformer: checkpoints with attention/MLP biases refused",
    "MistralForCausalLM": "windowed layers take the explicit path",
    "Qwen2ForCausalLM": "hooked_transformer: `use_sliding_window` refused",
    "Qwen3ForCausalLM": "q/k norm",
    "PhiForCausalLM": "hooked_transformer: `qk_layernorm` refused",
    "Gemma2ForCausalLM": "soft-capping; a GGUF header carries no soft-caps or attention scale, so transformers uses "
                         "its defaults (wrong for 27B)",
    "Gemma3ForCausalLM": "q/k norm; GGUF loses the 4B+ rope scaling; the multimodal class is not supported",
    "ApertusForCausalLM": "q/k norm",
    "OlmoForCausalLM": "q/k/v clipping",
    "Olmo2ForCausalLM": "q/k norm; post-norm, so `fold_ln` is ignored",
    "Olmo3ForCausalLM": "q/k norm; post-norm",
    "OlmoeForCausalLM": "q/k norm",
    "GptOssForCausalLM": "attention sinks; real MXFP4 checkpoints untested",
    "MixtralForCausalLM": "experts: attribution stops at the MLP (no single `W_out`)",
    "Qwen2MoeForCausalLM": "experts: attribution stops at the MLP (no single `W_out`)",
}


def cell(engine: str, architecture: str, fused: frozenset[str]) -> str:
    if architecture not in ENGINE_FAMILIES[engine]:
        return "no"
    text = "yes, fused" if architecture in fused else "yes"
    if engine == TRANSFORMER_BRIDGE and architecture in BETA_BRIDGE_GAPS:
        text += " (not on 3.x's beta)"
    return text


def table() -> str:
    gguf = {hf: name for name, hf in GGUF_ARCHITECTURES.items()}
    gguf["MistralForCausalLM"] = "llama"  # llama.cpp writes Mistral as llama
    lines = ["| family | HF architecture | hooked_transformer (TransformerLens 3.x) | transformer_bridge "
             "(TransformerLens 4.x) | GGUF (`general.architecture`) | streamed (`--placement streamed`) | caveats |",
             "|---|---|---|---|---|---|---|"]
    for architecture, family in SUPPORTED.items():
        lines.append(f"| {family} | {architecture} | {cell(HOOKED_TRANSFORMER, architecture, FUSED_ARCHITECTURES)} | "
                     f"{cell(TRANSFORMER_BRIDGE, architecture, BRIDGE_FUSED_ARCHITECTURES)} | "
                     f"{'`' + gguf[architecture] + '`' if architecture in gguf else 'no'} | "
                     f"{'yes' if architecture in STREAMABLE else 'no'} | {CAVEATS.get(architecture, '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
