"""Which model families load, on which engine, from which kind of file, checked before any weight is read."""

from __future__ import annotations

from pathlib import Path

from ..validation.errors import UsageError
from .engines import (
    ENGINES,
    HOOKED_TRANSFORMER,
    PIN_HINT,
    TRANSFORMER_BRIDGE,
    transformer_lens_major,
    transformer_lens_version,
)

# HF architecture class -> family name shown to users: the decoder-only architectures TransformerLens
# 3.9 has a weight converter for, each checked against HF on both engines by tests/test_architectures.py.
# Left out: QWenLMHeadModel and GPT2LMHeadCustomModel (remote code), Gemma3ForConditionalGeneration
# (multimodal), BERT, T5, HuBERT and wav2vec2 (not decoder-only).
HOOKED_FAMILIES: dict[str, str] = {
    "GPT2LMHeadModel": "GPT-2",
    "GPTNeoForCausalLM": "GPT-Neo",
    "GPTJForCausalLM": "GPT-J",
    "GPTNeoXForCausalLM": "GPT-NeoX/Pythia",
    "OPTForCausalLM": "OPT",
    "BloomForCausalLM": "BLOOM",
    "LlamaForCausalLM": "Llama",
    "MistralForCausalLM": "Mistral",
    "MixtralForCausalLM": "Mixtral",
    "Qwen2ForCausalLM": "Qwen2",
    "Qwen3ForCausalLM": "Qwen3",
    "PhiForCausalLM": "Phi",
    "Phi3ForCausalLM": "Phi-3",
    "GemmaForCausalLM": "Gemma",
    "Gemma2ForCausalLM": "Gemma 2",
    "Gemma3ForCausalLM": "Gemma 3",
    "ApertusForCausalLM": "Apertus",
    "OlmoForCausalLM": "OLMo",
    "Olmo2ForCausalLM": "OLMo 2",
    "Olmo3ForCausalLM": "OLMo 3",
    "OlmoeForCausalLM": "OLMoE",
    "GptOssForCausalLM": "GPT-OSS",
}
# Families only the bridge loads: TransformerLens 4.3 has an adapter for each (and for many more, not offered
# here until a test checks them against HF), 3.9 converts none of them to a HookedTransformer.
BRIDGE_ONLY_FAMILIES: dict[str, str] = {
    "FalconForCausalLM": "Falcon",
    "StableLmForCausalLM": "StableLM",
    "Starcoder2ForCausalLM": "StarCoder2",
    "GPTBigCodeForCausalLM": "GPTBigCode/StarCoder",
    "CohereForCausalLM": "Command R (Cohere)",
    "GraniteForCausalLM": "Granite",
    "MptForCausalLM": "MPT",
    "SmolLM3ForCausalLM": "SmolLM3",
    "GlmForCausalLM": "GLM",
    "Qwen2MoeForCausalLM": "Qwen2-MoE",
    "Exaone4ForCausalLM": "EXAONE 4",
    "HunYuanDenseV1ForCausalLM": "HunYuan Dense",
    "SeedOssForCausalLM": "Seed-OSS",
}
SUPPORTED: dict[str, str] = {**HOOKED_FAMILIES, **BRIDGE_ONLY_FAMILIES}  # every family either engine loads

# Families whose HookedTransformer attention is plain scaled dot-product once q, k and rotary are computed. Left out,
# because they need what the fused path does not do: Qwen3, Gemma 3, Apertus, OLMo 2/3, OLMoE
# (q/k RMSNorm), Gemma 2 (score soft-capping), GPT-OSS (attention sinks), BLOOM (ALiBi), OLMo (q/k/v
# clipping). Sliding-window ("local") layers of listed families take the explicit path at run time.
FUSED_ARCHITECTURES = frozenset({
    "GPT2LMHeadModel", "GPTNeoForCausalLM", "GPTJForCausalLM", "GPTNeoXForCausalLM", "OPTForCausalLM",
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM", "PhiForCausalLM",
    "Phi3ForCausalLM", "GemmaForCausalLM",
})
# Families whose HF attention forward the bridge's fused path (bridge_attention) can call in place of its own: q/k/v
# projection, rotary, sdpa, o projection, nothing the bridge hooks separately. Windowed layers take the explicit path.
BRIDGE_FUSED_ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"})

# GGUF ``general.architecture`` -> the HF architecture transformers dequantizes it to: the names in
# transformers.integrations.ggml.GGUF_CONFIG_MAPPING whose family is in SUPPORTED and whose round trip
# tests/test_architectures.py checks. llama.cpp writes Mistral as "llama" (transformers then builds
# MistralForCausalLM when the model's name says Mistral). Left out: "gpt-oss" (transformers' reader
# names the expert tensors after a layout its own GptOss model does not have) and the GGUF
# architectures of unsupported families (falcon, stablelm, starcoder2, mamba, qwen2moe, t5, ...).
GGUF_ARCHITECTURES: dict[str, str] = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "bloom": "BloomForCausalLM",
}


# Engine -> the families it loads with every resid_post equal to HF's. tests/test_architectures.py runs each
# family on each engine installed where it runs (the bridge of TransformerLens 4.x in the second environment,
# and 3.x's beta bridge in the first), and the docs' table (docs/running/models.md) is written from this mapping
# (scripts/families_table.py; tests/test_architectures.py checks that the page holds what it writes).
ENGINE_FAMILIES: dict[str, frozenset[str]] = {
    HOOKED_TRANSFORMER: frozenset(HOOKED_FAMILIES),
    TRANSFORMER_BRIDGE: frozenset(SUPPORTED),
}
# Families TransformerLens 3.x's beta bridge gets wrong, found by the same test: refused on it.
BETA_BRIDGE_GAPS: dict[str, str] = {
    "CohereForCausalLM": "its residuals differ from HF's by up to 37% (TransformerLens 3.9.0)",
}


def engine_families(engine: str) -> frozenset[str]:
    """The families ``engine`` loads with the installed TransformerLens."""
    families = ENGINE_FAMILIES[engine]
    if engine == TRANSFORMER_BRIDGE and transformer_lens_major() < 4:
        families = families - set(BETA_BRIDGE_GAPS)
    return families


def supported_families(engine: str | None = None) -> str:
    names = engine_families(engine) if engine else set(SUPPORTED)
    return ", ".join(f"{family} ({arch})" for arch, family in SUPPORTED.items() if arch in names)


def check_hf_architecture(architecture: str | None, where: str, engine: str | None = None) -> str:
    """``architecture`` if ``engine`` (None: any engine) loads it; otherwise one line naming the engine that does."""
    if architecture in (engine_families(engine) if engine else SUPPORTED):
        return architecture
    if engine is None:
        raise UsageError(f"{where}: architecture {architecture!r} cannot be loaded; supported: {supported_families()}")
    if architecture in BETA_BRIDGE_GAPS and architecture in ENGINE_FAMILIES[engine]:
        raise UsageError(f"{where}: architecture {architecture!r} cannot be loaded by TransformerLens "
                         f"{transformer_lens_version()}'s beta bridge ({BETA_BRIDGE_GAPS[architecture]}): "
                         f"{PIN_HINT[TRANSFORMER_BRIDGE]}")
    others = [name for name, families in ENGINE_FAMILIES.items() if name != engine and architecture in families]
    if others:
        raise UsageError(f"{where}: architecture {architecture!r} cannot be loaded by the {engine} engine "
                         f"({ENGINES[engine].model_class}); the {others[0]} engine loads it: --engine {others[0]} "
                         f"(installed TransformerLens {transformer_lens_version()}; {PIN_HINT[others[0]]} if it says no)")
    raise UsageError(f"{where}: architecture {architecture!r} cannot be loaded as a {ENGINES[engine].model_class}; "
                     f"supported: {supported_families(engine)}")


def check_gguf_architecture(architecture: str, path: Path) -> str:
    if architecture not in GGUF_ARCHITECTURES:
        raise UsageError(f"GGUF file {str(path)!r}: architecture {architecture!r} cannot be loaded; supported GGUF "
                         f"architectures: {', '.join(sorted(GGUF_ARCHITECTURES))} (families: {supported_families()})")
    return GGUF_ARCHITECTURES[architecture]
