"""Which model families load, from which kind of file, checked before any weight is read."""

from __future__ import annotations

from pathlib import Path

from ..validation.errors import UsageError
from .engines import ENGINES, HOOKED_TRANSFORMER, PIN_HINT, TRANSFORMER_BRIDGE

# HF architecture class -> family name shown to users: the decoder-only architectures TransformerLens
# 3.9 has a weight converter for, each checked against HF by tests/test_architectures.py. Left out:
# QWenLMHeadModel and GPT2LMHeadCustomModel (remote code), Gemma3ForConditionalGeneration (multimodal),
# BERT, T5, HuBERT and wav2vec2 (not decoder-only).
SUPPORTED: dict[str, str] = {
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


# Engine -> the families it loads with every resid_post equal to HF's: TransformerLens 4.3's bridge has an adapter
# for each family above (and for many more that the HookedTransformer engine lacks, not offered here until tests
# check them). tests/test_architectures.py runs every family on every engine installed where it runs, and the
# README's table is written from this mapping (scripts/families_table.py, checked by tests/test_readme.py).
ENGINE_FAMILIES: dict[str, frozenset[str]] = {
    HOOKED_TRANSFORMER: frozenset(SUPPORTED),
    TRANSFORMER_BRIDGE: frozenset(SUPPORTED),
}


def supported_families(engine: str | None = None) -> str:
    names = ENGINE_FAMILIES[engine] if engine else set(SUPPORTED)
    return ", ".join(f"{family} ({arch})" for arch, family in SUPPORTED.items() if arch in names)


def check_hf_architecture(architecture: str | None, where: str, engine: str | None = None) -> str:
    """``architecture`` if ``engine`` (None: any engine) loads it; otherwise one line naming the engine that does."""
    if architecture in (ENGINE_FAMILIES[engine] if engine else SUPPORTED):
        return architecture
    if engine is None:
        raise UsageError(f"{where}: architecture {architecture!r} cannot be loaded; supported: {supported_families()}")
    others = [name for name, families in ENGINE_FAMILIES.items() if name != engine and architecture in families]
    if others:
        raise UsageError(f"{where}: architecture {architecture!r} cannot be loaded by the {engine} engine "
                         f"({ENGINES[engine].model_class}); the {others[0]} engine loads it: {PIN_HINT[others[0]]} "
                         f"and --engine {others[0]}")
    raise UsageError(f"{where}: architecture {architecture!r} cannot be loaded as a {ENGINES[engine].model_class}; "
                     f"supported: {supported_families(engine)}")


def check_gguf_architecture(architecture: str, path: Path) -> str:
    if architecture not in GGUF_ARCHITECTURES:
        raise UsageError(f"GGUF file {str(path)!r}: architecture {architecture!r} cannot be loaded; supported GGUF "
                         f"architectures: {', '.join(sorted(GGUF_ARCHITECTURES))} (families: {supported_families()})")
    return GGUF_ARCHITECTURES[architecture]
