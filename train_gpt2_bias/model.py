"""GPT-2 variants as ``HookedTransformer`` models built from a ``HookedTransformerConfig``.

``build_model(config)`` is the builder of the checkpoint format ``train_gpt2_bias`` in mech_interp's table of formats
(``mech_interp.models.checkpoint.FORMATS``; a checkpoint names its format, never code), so ``mech_interp.models``
loads a trained variant without importing this package statically. ``config`` holds
HookedTransformerConfig fields plus ``variant`` (``VARIANTS``) and ``bias`` (whether the linear and LayerNorm
biases train; upstream trains GPT-2 with ``bias=False``, reproduced here by keeping TransformerLens' bias
parameters at zero and frozen, which computes exactly what a bias-free model does).

The ``sink`` variant (convention 2): ``n_prefix_tokens`` learnable vectors (``prefix.W_prefix``
[n_prefix, d_model]) are prepended to the residual stream after the token and position embeddings (they get no
position embedding) and dropped after ``ln_final``, so every block hook has ``n_prefix_tokens`` extra positions in
front (``hook_embed``/``hook_pos_embed`` do not), ``unembed.hook_in`` and the logits have the T token positions
only, and the sink never receives a prediction or a loss term.

Differences from upstream's nanoGPT model, all stated: the unembedding is not tied to the embedding
(TransformerLens keeps ``W_U`` apart; +d_vocab x d_model parameters), the vocabulary is the tokenizer's
(50257, not padded to 50304), there is no dropout (upstream trains with dropout 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components import Embed, LayerNorm, Unembed

from .attention import ATTENTION_CLASSES
from .variants import VARIANTS

# How hooked_config.json names what it is, for mech_interp's table of checkpoint formats.
FORMAT = {"format": "train_gpt2_bias", "format_version": 1}
INIT_STD = 0.02  # nanoGPT / GPT-2
# In hooked_config.json beside the HookedTransformerConfig fields ("builder": what the previous version wrote).
_EXTRA_KEYS = ("variant", "bias", "n_prefix_tokens", "n_key_slots", "builder", *FORMAT)


class PrefixTokens(nn.Module):
    """Learned vectors written in front of the residual stream (the sink variant's sink token)."""

    def __init__(self, cfg: HookedTransformerConfig, n_prefix: int):
        super().__init__()
        self.W_prefix = nn.Parameter(torch.randn(n_prefix, cfg.d_model, dtype=cfg.dtype) * INIT_STD)

    def forward(self, residual: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch prefix_pos d_model"]:
        prefix = self.W_prefix.to(residual.dtype).expand(residual.shape[0], -1, -1)
        return torch.cat([prefix, residual], dim=1)  # [batch, n_prefix + pos, d_model]


class FastLayerNorm(LayerNorm):
    """TransformerLens' LayerNorm through ``F.layer_norm`` whenever nobody hooks its scale or normalized output
    (training speed; the same values to float rounding), else TransformerLens' own path with its hooks."""

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        if self.hook_scale._forward_hooks or self.hook_normalized._forward_hooks or self.cfg.dtype not in (
                torch.float32, torch.float64):
            return super().forward(x)
        return F.layer_norm(x, (self.length,), self.w, self.b, self.eps)


class FastEmbed(Embed):
    """``F.embedding`` instead of indexing: same values, a dense embedding backward instead of index_put."""

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_model"]:
        return F.embedding(tokens, self.W_E)


class PrefixDroppingUnembed(Unembed):
    """The unembedding without the per-forward transposed copy of ``W_U`` (``F.linear`` takes the view); a model
    with prefix positions drops them before ``hook_in``."""

    n_prefix_tokens = 0

    def forward(self, residual: Float[torch.Tensor, "batch prefix_pos d_model"]) -> Float[torch.Tensor, "batch pos d_vocab_out"]:
        residual = self.hook_in(residual[:, self.n_prefix_tokens:])  # [batch, pos, d_model]
        return self.hook_out(F.linear(residual, self.W_U.T, self.b_U))  # [batch, pos, d_vocab_out]


class VariantTransformer(HookedTransformer):
    """A HookedTransformer that may carry learned prefix positions (``n_prefix_tokens``, convention 2)."""

    n_prefix_tokens: int = 0
    variant: str = "default"

    def get_residual(self, embed, pos_offset, *args, **kwargs):
        """Token + position embeddings, then the prefix in front. Both ``forward`` (through ``input_to_embed``) and
        TransformerLens' ``generate`` build the residual here, so both see the sink."""
        out = super().get_residual(embed, pos_offset, *args, **kwargs)
        if not self.n_prefix_tokens:
            return out
        if isinstance(out, tuple):
            residual, shortformer = out
            return self.prefix(residual), shortformer  # [batch, n_prefix + pos, d_model]
        return self.prefix(out)

    def input_to_embed(self, input, **kwargs):
        residual, tokens, shortformer, mask = super().input_to_embed(input, **kwargs)
        if self.n_prefix_tokens and mask is not None:  # a padding mask covers the prefix too: always visible
            mask = torch.cat([mask.new_ones(mask.shape[0], self.n_prefix_tokens), mask], dim=1)
        return residual, tokens, shortformer, mask


def hooked_config(model: dict[str, Any], vocab_size: int) -> HookedTransformerConfig:
    """The TransformerLens config of a model preset (``presets.MODEL_PRESETS``) and a vocabulary size."""
    return HookedTransformerConfig(
        n_layers=model["n_layers"], d_model=model["d_model"], n_heads=model["n_heads"],
        d_head=model["d_model"] // model["n_heads"], d_mlp=4 * model["d_model"], n_ctx=model["n_ctx"],
        d_vocab=vocab_size, act_fn="gelu", normalization_type="LN", positional_embedding_type="standard",
        attention_dir="causal", default_prepend_bos=False, init_weights=False,
        original_architecture=f"GPT2-{model['variant']}", model_name=f"gpt2-{model['variant']}",
    )


def config_dict(cfg: HookedTransformerConfig, variant: str, bias: bool) -> dict[str, Any]:
    """What ``hooked_config.json`` holds: the config fields that define the model, the variant and the format."""
    keys = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn", "normalization_type",
            "positional_embedding_type", "attention_dir", "default_prepend_bos", "original_architecture", "model_name",
            "eps")
    return {**{k: getattr(cfg, k) for k in keys}, "variant": variant, "bias": bias, **FORMAT,
            "n_prefix_tokens": VARIANTS[variant].n_prefix_tokens, "n_key_slots": VARIANTS[variant].n_key_slots}


def build_model(config: dict[str, Any], seed: int | None = None) -> VariantTransformer:
    """Build the variant named in ``config`` (the builder of checkpoint format train_gpt2_bias). ``seed`` draws
    nanoGPT's initialisation (N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layers))); without it the weights
    are whatever the caller loads next."""
    config = dict(config)
    variant = config.get("variant", "default")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    bias = bool(config.get("bias", False))
    fields = {k: v for k, v in config.items() if k not in _EXTRA_KEYS}
    cfg = HookedTransformerConfig(**{**fields, "init_weights": False})
    if seed is not None:
        torch.manual_seed(seed)
    model = VariantTransformer(cfg)
    model.variant = variant
    attention_cls = ATTENTION_CLASSES[variant]
    for i, block in enumerate(model.blocks):
        block.attn = attention_cls(model.cfg, "global", i)
        block.ln1, block.ln2 = FastLayerNorm(model.cfg), FastLayerNorm(model.cfg)
    model.ln_final = FastLayerNorm(model.cfg)
    model.embed = FastEmbed(model.cfg)
    n_prefix = VARIANTS[variant].n_prefix_tokens
    model.unembed = PrefixDroppingUnembed(model.cfg)
    if n_prefix:
        for block in model.blocks:  # a cache would get the sink again at every generated token
            block.attn.supports_kv_cache = False
        model.n_prefix_tokens = n_prefix
        model.prefix = PrefixTokens(model.cfg, n_prefix)
        model.unembed.n_prefix_tokens = n_prefix
    if seed is not None:
        _initialise(model)
    if not bias:
        for name, param in model.named_parameters():
            if _is_bias(name):
                param.requires_grad_(False)
    model.setup()  # registers the hook points of the new modules (hook_gate, ...)
    return model


def _is_bias(name: str) -> bool:
    """TransformerLens' bias parameters: b_Q/K/V/O, b_in/b_out, b_U, and LayerNorm's ``b`` (the gate's ``b_gate``
    is part of the gate, not a linear bias of GPT-2, and always trains)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U", "b")


@torch.no_grad()
def _initialise(model: VariantTransformer) -> None:
    n_layers = model.cfg.n_layers
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("W_O", "W_out"):  # nanoGPT: c_proj weights scaled for the residual accumulation
            param.normal_(0.0, INIT_STD / math.sqrt(2 * n_layers))
        elif leaf.startswith("W_") or leaf in ("k_slot", "v_slot"):
            param.normal_(0.0, INIT_STD)
        elif leaf == "w":  # LayerNorm weight
            param.fill_(1.0)
        else:  # biases, the gate's bias
            param.zero_()
