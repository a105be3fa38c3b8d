"""A trained checkpoint (``checkpoint.py``) as the Hugging Face GPT-2 it is, for the TransformerBridge engine.

The bridge wraps an HF model; the trainer saves a HookedTransformer's state dict. Its ``default``
variant is plain GPT-2 (learned positions, LayerNorm, exact GELU, heads of ``d_model / n_heads``),
so its weights map one to one onto ``GPT2LMHeadModel``'s (``Conv1D`` weights are ``[in, out]``, as
TransformerLens keeps ``W_in``; the three attention projections are concatenated). The other
variants add a sink token, key/value slots or a gate that no HF architecture has: they are refused
in one line that names the engine that loads them. Nothing in the directory is executed: the
weights are read with ``tensor_files.load_tensors`` (safetensors, or ``weights_only``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..validation.errors import UsageError
from .checkpoint import CONFIG_FILE, TOKENIZER_DIR, read_checkpoint_config, read_weights, weights_file
from .engines import HOOKED_TRANSFORMER, PIN_HINT
from .hf_model import HFModel
from .spec import ModelSpec

# What the HF GPT-2 fixes and a checkpoint's config must therefore say.
_GPT2_SHAPE = {"act_fn": "gelu", "normalization_type": "LN", "positional_embedding_type": "standard",
               "attention_dir": "causal"}


def check_bridge_checkpoint(spec: ModelSpec) -> dict[str, Any]:
    """The checkpoint's config, if it is a GPT-2 the bridge can wrap (read before any weight is)."""
    config = read_checkpoint_config(spec.path, spec.text)
    variant = config.get("variant", "default")
    if variant != "default":
        raise UsageError(f"checkpoint {spec.text!r} is of variant {variant!r}, which adds modules no Hugging Face "
                         f"architecture has, so the transformer_bridge engine cannot wrap it: load it with --engine "
                         f"{HOOKED_TRANSFORMER} ({PIN_HINT[HOOKED_TRANSFORMER]})")
    for key, value in _GPT2_SHAPE.items():
        if config.get(key) != value:
            raise UsageError(f"checkpoint {spec.text!r}: {CONFIG_FILE} has {key}={config.get(key)!r}, but a GPT-2 "
                             f"for the transformer_bridge engine needs {value!r}: load it with --engine {HOOKED_TRANSFORMER}")
    if config["n_heads"] * config["d_head"] != config["d_model"]:
        raise UsageError(f"checkpoint {spec.text!r}: n_heads x d_head ({config['n_heads']} x {config['d_head']}) is not "
                         f"d_model ({config['d_model']}), which GPT-2 needs: load it with --engine {HOOKED_TRANSFORMER}")
    if not (spec.path / TOKENIZER_DIR).is_dir():
        raise UsageError(f"checkpoint {spec.text!r} has no {TOKENIZER_DIR}/ directory, which the transformer_bridge "
                         f"engine needs: save the tokenizer with it, or load it with --engine {HOOKED_TRANSFORMER}")
    return config


def hf_from_checkpoint(path: Path, text: str, dtype) -> HFModel:
    """The checkpoint's weights in a ``GPT2LMHeadModel``, and its tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    config = check_bridge_checkpoint(ModelSpec(text, "checkpoint", path))
    state = read_weights(weights_file(path), text)
    if state["unembed.b_U"].any():
        raise UsageError(f"checkpoint {text!r} has a non-zero unembedding bias, which GPT-2's lm_head lacks: load it "
                         f"with --engine {HOOKED_TRANSFORMER}")
    hf_config = GPT2Config(vocab_size=config["d_vocab"], n_positions=config["n_ctx"], n_embd=config["d_model"],
                           n_layer=config["n_layers"], n_head=config["n_heads"], n_inner=config["d_mlp"],
                           activation_function="gelu", layer_norm_epsilon=config["eps"], tie_word_embeddings=False,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(hf_config)  # trainer-sized: initialising it first costs nothing worth a meta-device build
    model.load_state_dict(gpt2_state_dict(state, config["n_layers"]), strict=True)
    model.to(dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path / TOKENIZER_DIR), trust_remote_code=False)
    return HFModel(model=model, tokenizer=tokenizer, source=f"checkpoint:{path} (as GPT2LMHeadModel)")


def gpt2_state_dict(state: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """TransformerLens' GPT-2 weight names and layouts to ``GPT2LMHeadModel``'s (the inverse of its conversion)."""
    import torch

    def flat_in(w):  # [head_index, d_model, d_head] -> Conv1D [d_model, head_index * d_head]
        return w.permute(1, 0, 2).reshape(w.shape[1], -1)

    out = {"transformer.wte.weight": state["embed.W_E"], "transformer.wpe.weight": state["pos_embed.W_pos"],
           "transformer.ln_f.weight": state["ln_final.w"], "transformer.ln_f.bias": state["ln_final.b"],
           "lm_head.weight": state["unembed.W_U"].T.contiguous()}
    for i in range(n_layers):
        tl, hf = f"blocks.{i}.", f"transformer.h.{i}."
        out[hf + "ln_1.weight"], out[hf + "ln_1.bias"] = state[tl + "ln1.w"], state[tl + "ln1.b"]
        out[hf + "ln_2.weight"], out[hf + "ln_2.bias"] = state[tl + "ln2.w"], state[tl + "ln2.b"]
        out[hf + "attn.c_attn.weight"] = torch.cat([flat_in(state[tl + f"attn.W_{x}"]) for x in "QKV"], dim=1)
        out[hf + "attn.c_attn.bias"] = torch.cat([state[tl + f"attn.b_{x}"].reshape(-1) for x in "QKV"])
        w_o = state[tl + "attn.W_O"]  # [head_index, d_head, d_model]
        out[hf + "attn.c_proj.weight"] = w_o.reshape(-1, w_o.shape[-1])
        out[hf + "attn.c_proj.bias"] = state[tl + "attn.b_O"]
        out[hf + "mlp.c_fc.weight"], out[hf + "mlp.c_fc.bias"] = state[tl + "mlp.W_in"], state[tl + "mlp.b_in"]
        out[hf + "mlp.c_proj.weight"], out[hf + "mlp.c_proj.bias"] = state[tl + "mlp.W_out"], state[tl + "mlp.b_out"]
    return {k: v.contiguous() for k, v in out.items()}
