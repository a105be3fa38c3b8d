"""Which model families load, from which kind of file, checked before any weight is read."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError

# HF architecture class -> family name shown to users.
SUPPORTED: dict[str, str] = {
    "GPT2LMHeadModel": "GPT-2",
    "LlamaForCausalLM": "Llama",
}

# GGUF ``general.architecture`` -> the HF architecture transformers dequantizes it to.
GGUF_ARCHITECTURES: dict[str, str] = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
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
