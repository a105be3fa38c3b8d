"""Which model families load, from which kind of file, checked before any weight is read."""

from __future__ import annotations

from pathlib import Path

from ..validation.errors import UsageError

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


def supported_families() -> str:
    return ", ".join(f"{family} ({arch})" for arch, family in SUPPORTED.items())


def check_hf_architecture(architecture: str | None, where: str) -> str:
    if architecture not in SUPPORTED:
        raise UsageError(f"{where}: architecture {architecture!r} cannot be converted to a HookedTransformer; "
                         f"supported: {supported_families()}")
    return architecture


def check_gguf_architecture(architecture: str, path: Path) -> str:
    if architecture not in GGUF_ARCHITECTURES:
        raise UsageError(f"GGUF file {str(path)!r}: architecture {architecture!r} cannot be loaded; supported GGUF "
                         f"architectures: {', '.join(sorted(GGUF_ARCHITECTURES))} (families: {supported_families()})")
    return GGUF_ARCHITECTURES[architecture]
