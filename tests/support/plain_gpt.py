"""A plain PyTorch GPT (nanoGPT's layout) of every variant: the reference the TransformerLens models are checked and
timed against. ``from_hooked`` copies a trained or fresh ``VariantTransformer``'s weights into it.

``slot_kernel`` picks how the attention-bias slot is computed: ``"mask"`` is upstream's formulation (keys
``[k'; K]``, a boolean mask ``[True | causal tril]``, ``is_causal=False``; an independent check of the
TransformerLens class), ``"leading_position"`` the fast one the TransformerLens class uses (a dummy leading query,
the causal kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn


class PlainAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, variant: str, bias: bool, slot_kernel: str):
        super().__init__()
        self.n_heads, self.d_head, self.variant, self.slot_kernel = n_heads, d_model // n_heads, variant, slot_kernel
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)
        if variant == "attn_bias":
            self.k_bias = nn.Parameter(torch.zeros(1, n_heads, 1, self.d_head))
            self.v_bias = nn.Parameter(torch.zeros(1, n_heads, 1, self.d_head))
        if variant == "gated":
            self.gate = nn.Linear(d_model, n_heads, bias=True)

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        batch, n_pos, d_model = x.shape
        q, k, v = (t.view(batch, n_pos, self.n_heads, self.d_head).transpose(1, 2)
                   for t in self.c_attn(x).split(d_model, dim=2))  # each [batch, head, pos, d_head]
        if self.variant == "attn_bias":
            k = torch.cat([self.k_bias.expand(batch, -1, -1, -1).to(k.dtype), k], dim=2)  # [batch, head, 1+pos, d_head]
            v = torch.cat([self.v_bias.expand(batch, -1, -1, -1).to(v.dtype), v], dim=2)
            if self.slot_kernel == "mask":
                mask = torch.ones(n_pos, n_pos + 1, dtype=torch.bool, device=x.device).tril(diagonal=1)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                q = torch.cat([q.new_zeros(batch, self.n_heads, 1, self.d_head), q], dim=2)
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, 1:]
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2)  # [batch, pos, head, d_head]
        if self.variant == "gated":
            y = y * torch.sigmoid(self.gate(x))[..., None]
        return self.c_proj(y.reshape(batch, n_pos, d_model))


class PlainBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, variant: str, bias: bool, slot_kernel: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = PlainAttention(d_model, n_heads, variant, bias, slot_kernel)
        self.ln_2 = nn.LayerNorm(d_model, bias=bias)
        self.c_fc = nn.Linear(d_model, 4 * d_model, bias=bias)
        self.c_proj = nn.Linear(4 * d_model, d_model, bias=bias)

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self, n_layers: int, d_model: int, n_heads: int, n_ctx: int, d_vocab: int, variant: str = "default",
                 bias: bool = False, slot_kernel: str = "leading_position"):
        super().__init__()
        self.variant = variant
        self.wte = nn.Embedding(d_vocab, d_model)
        self.wpe = nn.Embedding(n_ctx, d_model)
        if variant == "sink":
            self.sink = nn.Parameter(torch.zeros(1, 1, d_model))
        self.h = nn.ModuleList(PlainBlock(d_model, n_heads, variant, bias, slot_kernel) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.lm_head = nn.Linear(d_model, d_vocab, bias=bias)

    def forward(self, idx: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))  # [batch, pos, d_model]
        if self.variant == "sink":
            x = torch.cat([self.sink.expand(idx.shape[0], -1, -1), x], dim=1)  # [batch, 1 + pos, d_model]
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        if self.variant == "sink":
            x = x[:, 1:]
        return self.lm_head(x)


@torch.no_grad()
def from_hooked(model, slot_kernel: str = "leading_position") -> PlainGPT:
    """A PlainGPT with ``model``'s weights (a ``train_gpt2_bias.model.VariantTransformer``)."""
    cfg = model.cfg
    bias = any(p.requires_grad for n, p in model.named_parameters() if n.endswith(("b_Q", "b_in", "ln1.b")))
    plain = PlainGPT(cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_ctx, cfg.d_vocab, model.variant, bias, slot_kernel)
    plain.to(device=model.W_E.device, dtype=model.W_E.dtype)
    d_model = cfg.d_model
    plain.wte.weight.copy_(model.embed.W_E)
    plain.wpe.weight.copy_(model.pos_embed.W_pos)
    if model.variant == "sink":
        plain.sink.copy_(model.prefix.W_prefix[None])
    for block, mine in zip(model.blocks, plain.h):
        attn = block.attn
        qkv = [w.permute(0, 2, 1).reshape(d_model, d_model) for w in (attn.W_Q, attn.W_K, attn.W_V)]
        mine.attn.c_attn.weight.copy_(torch.cat(qkv, dim=0))
        mine.attn.c_proj.weight.copy_(attn.W_O.reshape(d_model, d_model).T)
        mine.c_fc.weight.copy_(block.mlp.W_in.T)
        mine.c_proj.weight.copy_(block.mlp.W_out.T)
        mine.ln_1.weight.copy_(block.ln1.w)
        mine.ln_2.weight.copy_(block.ln2.w)
        if bias:
            mine.attn.c_attn.bias.copy_(torch.cat([attn.b_Q.flatten(), attn.b_K.flatten(), attn.b_V.flatten()]))
            mine.attn.c_proj.bias.copy_(attn.b_O)
            mine.c_fc.bias.copy_(block.mlp.b_in)
            mine.c_proj.bias.copy_(block.mlp.b_out)
            mine.ln_1.bias.copy_(block.ln1.b)
            mine.ln_2.bias.copy_(block.ln2.b)
        if model.variant == "attn_bias":
            mine.attn.k_bias.copy_(attn.k_slot[None, :, None])
            mine.attn.v_bias.copy_(attn.v_slot[None, :, None])
        if model.variant == "gated":
            mine.attn.gate.weight.copy_(attn.W_gate.T)
            mine.attn.gate.bias.copy_(attn.b_gate)
    plain.ln_f.weight.copy_(model.ln_final.w)
    plain.lm_head.weight.copy_(model.unembed.W_U.T)
    if bias:
        plain.ln_f.bias.copy_(model.ln_final.b)
        plain.lm_head.bias.copy_(model.unembed.b_U)
    return plain
