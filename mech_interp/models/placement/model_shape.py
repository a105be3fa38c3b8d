"""A model's shape and parameter count per block, read from its config without its weights.

The config comes from the registry (a registered model's own config function), a local HF directory's
``config.json``, a GGUF header (transformers maps its metadata) or the hub (a cached or reachable
``config.json``). The model is then built on PyTorch's ``meta`` device, which allocates nothing, and its
parameters are counted module by module: exact for every architecture transformers builds (grouped-query
attention, mixture-of-experts blocks, parallel attention, tied embeddings) without a formula per family.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...validation.errors import UsageError, reason
from ..spec import ModelSpec


@dataclass(frozen=True)
class ModelShape:
    name: str
    architecture: str  # the HF class, e.g. LlamaForCausalLM
    d_model: int
    d_mlp: int  # one expert's width on a mixture-of-experts model
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_vocab: int
    n_ctx: int | None
    block_params: tuple[int, ...]  # parameters of each block, in order
    embed_params: int  # token (and learned position) embeddings
    head_params: int  # final norm and LM head; 0 for a head tied to the embeddings, plus the norm
    n_experts: int = 1
    n_experts_per_token: int = 1

    @property
    def n_layers(self) -> int:
        return len(self.block_params)

    @property
    def n_params(self) -> int:
        return sum(self.block_params) + self.embed_params + self.head_params


def _first(config, *names: str, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def shape_from_config(config, name: str) -> ModelShape:
    """Build ``config``'s causal LM on the meta device and count its parameters per block."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as err:  # transformers has no causal LM for this config
        raise UsageError(f"cannot build {name!r} from its config ({reason(err, 160)}): expected a causal language "
                         "model that transformers builds") from None
    n_layers = _first(config, "num_hidden_layers", "n_layer", "n_layers")
    blocks = next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers), None)
    if blocks is None:
        raise UsageError(f"cannot find the {n_layers} blocks of {name!r} in its {type(model).__name__}")
    in_blocks = {id(p) for p in blocks.parameters()}
    block_params = tuple(sum(p.numel() for p in block.parameters()) for block in blocks)
    embed = model.get_input_embeddings()
    embed_ids = {id(p) for p in embed.parameters()}
    positions = [p for n, p in model.named_parameters() if id(p) not in in_blocks and id(p) not in embed_ids
                 and ("wpe" in n or "position" in n)]
    embed_params = sum(p.numel() for p in embed.parameters()) + sum(p.numel() for p in positions)
    rest = sum(p.numel() for p in model.parameters()) - sum(block_params) - embed_params  # parameters() dedups ties
    d_model = _first(config, "hidden_size", "n_embd", "d_model")
    n_heads = _first(config, "num_attention_heads", "n_head", "n_heads")
    if getattr(config, "multi_query", False) and not getattr(config, "new_decoder_architecture", False):
        n_kv = 1  # Falcon's multi-query attention, whatever its num_kv_heads says
    else:
        n_kv = _first(config, "num_key_value_heads", "n_head_kv", "num_kv_heads", default=n_heads)
    d_head = _first(config, "head_dim", default=None) or d_model // n_heads
    d_mlp = _first(config, "intermediate_size", "n_inner", "ffn_hidden_size", "moe_intermediate_size", default=None)
    if d_mlp is None:
        ratio = getattr(getattr(config, "ffn_config", None), "ffn_hidden_size", None) or \
            _first(config, "expansion_ratio", default=4)
        d_mlp = int(ratio * d_model) if ratio < 64 else int(ratio)
    return ModelShape(
        name=name, architecture=type(model).__name__, d_model=int(d_model), d_mlp=int(d_mlp), n_heads=int(n_heads),
        n_kv_heads=int(n_kv), d_head=int(d_head), d_vocab=int(_first(config, "vocab_size")),
        n_ctx=_first(config, "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", default=None),
        block_params=block_params, embed_params=int(embed_params), head_params=int(rest),
        n_experts=int(_first(config, "num_local_experts", "num_experts", default=1)),
        n_experts_per_token=int(_first(config, "num_experts_per_tok", "moe_top_k", default=1)),
    )


def read_config(spec: ModelSpec):
    """The transformers config of ``spec``, without its weights."""
    from transformers import AutoConfig

    if spec.kind == "registered":
        from ..registry import model_entry

        entry = model_entry(spec.text)
        if entry.config is None:
            raise UsageError(f"registered model {spec.text!r} has no config to plan from")
        return entry.config()
    if spec.kind == "checkpoint":
        raise UsageError(f"{spec.text!r} is a trained checkpoint: plan reads Hugging Face configs (registered names, "
                         "HF directories, GGUF files, hub names); a checkpoint's size is its model.safetensors")
    try:
        if spec.kind == "gguf":
            return AutoConfig.from_pretrained(spec.path.parent, gguf_file=spec.path.name, trust_remote_code=False)
        if spec.kind == "hf_dir":
            return AutoConfig.from_pretrained(spec.path, trust_remote_code=False)
        return AutoConfig.from_pretrained(spec.text, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"cannot read the config of {spec.text!r} ({reason(err, 160)})") from None


def model_shape(spec: ModelSpec) -> ModelShape:
    return shape_from_config(read_config(spec), spec.text)
