"""Fused-kernel attention for HookedTransformer layers whose scores and pattern nobody hooks.

TransformerLens computes attention explicitly (scores, causal mask, softmax, pattern @ V) so that
``hook_attn_scores`` and ``hook_pattern`` exist; on a 135M LLaMA this doubles the forward time.
Statistics passes only read the residual stream, so a layer with no hook on those two points can
call ``scaled_dot_product_attention`` instead. All other hook points (q, k, v, rot_q, rot_k, z)
still fire with the same values.

Opt-in and allow-listed: ``enable_fused_attention`` gives the fused forward only to blocks whose
attention class is in ``FUSED_CLASSES`` and whose model family is in ``FUSED_ARCHITECTURES`` (the
ones tests/test_architectures.py checks against HF with the fused path running), by switching the
block's attention to a subclass that owns the fast path. At run time the subclass still takes
TransformerLens' own forward whenever a hook sits on the scores or the pattern (e.g.
``run_with_cache``) or the call uses anything the fused path does not cover (KV cache, padding
masks, ALiBi, soft-capping, sliding windows, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.components import Attention, GroupedQueryAttention
from transformer_lens.components.abstract_attention import AbstractAttention
from transformer_lens.components.rms_norm import RMSNorm
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES, TransformerBlock
from transformer_lens.hook_points import HookPoint

from .architectures import FUSED_ARCHITECTURES
from .hooked_model import has_hooks


def fusable_call(attn: AbstractAttention, past_kv_cache_entry, additive_attention_mask, attention_mask,
                 position_bias) -> bool:
    """Whether this call of ``attn`` can run the causal kernel: no KV cache, no additive or padding mask, no
    position bias, nobody hooking the scores or the pattern (which the kernel never forms), and a layer whose
    scores are plain scaled dot products (``fusable_layer``). Whether the queries and keys are computed the way
    the caller's fused path computes them (rotary, key slots) is the caller's to check."""
    if past_kv_cache_entry is not None or additive_attention_mask is not None or position_bias is not None:
        return False
    if attention_mask is not None and not bool(attention_mask.all()):
        return False
    return not has_hooks(attn.hook_attn_scores) and not has_hooks(attn.hook_pattern) and fusable_layer(attn)


def fusable_layer(attn: AbstractAttention) -> bool:
    """The layer's configuration asks for nothing the causal kernel leaves out (per-head results, 4-bit weights,
    attention sinks, log-n scaling, q/k norms, q/k/v clipping, score soft-capping, a local window, a
    non-causal direction)."""
    cfg = attn.cfg
    return (
        cfg.positional_embedding_type in ("standard", "rotary", "shortformer")
        and (attn._attention_dir_override or cfg.attention_dir) == "causal"
        and attn.attn_type == "global"
        and not cfg.use_attn_result
        and not cfg.load_in_4bit
        and not cfg.use_attention_sinks
        and not cfg.use_logn_attn
        and not getattr(cfg, "use_qk_norm", False)
        and cfg.clip_qkv is None
        and not (cfg.attn_scores_soft_cap and cfg.attn_scores_soft_cap > 0)
    )


def causal_attention(
    attn: AbstractAttention,
    q: Float[torch.Tensor, "batch pos head_index d_head"],
    k: Float[torch.Tensor, "batch pos kv_head_index d_head"],
    v: Float[torch.Tensor, "batch pos kv_head_index d_head"],
) -> Float[torch.Tensor, "batch pos head_index d_head"]:
    """``softmax(q k^T * attn_scale^-1, causal) v`` by PyTorch's fused kernel: TransformerLens' ``z`` before
    ``hook_z``. Keys and values may have fewer (grouped) heads than the queries."""
    n_heads, n_kv_heads = q.shape[2], k.shape[2]
    q, k, v = q.transpose(1, 2), k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype)
    gqa = n_kv_heads != n_heads
    if gqa and q.device.type == "cuda" and q.dtype == torch.float32:
        # Only the flash and math kernels take grouped keys; flash has no float32, so enable_gqa would
        # run the math kernel (T x T scores in memory). Repeating the few kv heads costs less.
        k, v = (t.repeat_interleave(n_heads // n_kv_heads, dim=1) for t in (k, v))
        gqa = False
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / float(attn.attn_scale), enable_gqa=gqa)
    return z.transpose(1, 2)


def attention_output(
    attn: AbstractAttention, z: Float[torch.Tensor, "batch pos head_index d_head"]
) -> Float[torch.Tensor, "batch pos d_model"]:
    """The heads' outputs through ``W_O`` and ``b_O`` as one linear map (TransformerLens sums per head)."""
    w_o = attn.W_O.reshape(z.shape[2] * attn.cfg.d_head, attn.cfg.d_model).T  # [d_model, head_index*d_head]
    return F.linear(z.reshape(z.shape[0], z.shape[1], -1).to(w_o.dtype), w_o, attn.b_O)


def _fused_forward(
    self,
    query_input: Float[torch.Tensor, "batch pos d_model"],
    key_input: Float[torch.Tensor, "batch pos d_model"],
    value_input: Float[torch.Tensor, "batch pos d_model"],
    past_kv_cache_entry=None,
    additive_attention_mask=None,
    attention_mask=None,
    position_bias=None,
) -> Float[torch.Tensor, "batch pos d_model"]:
    if not (fusable_call(self, past_kv_cache_entry, additive_attention_mask, attention_mask, position_bias)
            and self.cfg.original_architecture in FUSED_ARCHITECTURES):
        return _PLAIN[type(self)].forward(self, query_input, key_input, value_input, past_kv_cache_entry,
                                          additive_attention_mask, attention_mask, position_bias)
    q, k, v = _qkv(self, query_input, key_input, value_input)
    if self.cfg.positional_embedding_type == "rotary":
        q = self.hook_rot_q(_rotary(self, q))  # [batch, pos, head_index, d_head]
        k = self.hook_rot_k(_rotary(self, k))  # [batch, pos, kv_head_index, d_head]
    z = self.hook_z(causal_attention(self, q, k, v))  # [batch, pos, head_index, d_head]
    return attention_output(self, z)


def _project(x: Float[torch.Tensor, "batch pos d_model"], w: Float[torch.Tensor, "head d_model d_head"],
             b: Float[torch.Tensor, "head d_head"]) -> Float[torch.Tensor, "batch pos head d_head"]:
    """``simple_attn_linear`` without einops' parsing: the same rearranged weight (a view under the
    linear layout) into the same ``F.linear``, so the same bits."""
    n, d_model, d_head = w.shape
    return F.linear(x, w.permute(0, 2, 1).reshape(n * d_head, d_model), b.reshape(n * d_head)).reshape(
        x.shape[0], x.shape[1], n, d_head)


def _qkv(attn: AbstractAttention, query_input, key_input, value_input):
    cfg = attn.cfg
    if cfg.use_split_qkv_input or cfg.use_attn_in or query_input.device != attn.W_Q.device:
        return attn.calculate_qkv_matrices(query_input, key_input, value_input)
    grouped = isinstance(attn, GroupedQueryAttention) and not cfg.ungroup_grouped_query_attention
    w_k, b_k, w_v, b_v = (attn._W_K, attn._b_K, attn._W_V, attn._b_V) if grouped else (attn.W_K, attn.b_K, attn.W_V, attn.b_V)
    q = attn.hook_q(_project(query_input, attn.W_Q, attn.b_Q))  # [batch, pos, head_index, d_head]
    k = attn.hook_k(_project(key_input, w_k, b_k))  # [batch, pos, kv_head_index, d_head]
    v = attn.hook_v(_project(value_input, w_v, b_v))  # [batch, pos, kv_head_index, d_head]
    return q, k, v


def _rotary(attn: AbstractAttention, x: Float[torch.Tensor, "batch pos head d_head"]) -> Float[torch.Tensor, "batch pos head d_head"]:
    """TransformerLens' ``apply_rotary`` without its per-call clone and two slice copies: the same
    products and sum in the same order (so the same bits), with the rotated half built by one cat
    and the sin/cos views made once per sequence length."""
    cfg, pos = attn.cfg, x.shape[1]
    cos_table = attn.rotary_cos
    if cfg.rotary_adjacent_pairs or cfg.use_dynamic_ntk_rope or pos > cos_table.shape[0] or x.device != cos_table.device:
        return attn.apply_rotary(x, 0, None)
    views = attn.__dict__.get("_rotary_views")
    if views is None or views[0] != pos or views[1] is not cos_table:
        views = (pos, cos_table, cos_table[None, :pos, None, :], attn.rotary_sin[None, :pos, None, :])
        attn.__dict__["_rotary_views"] = views  # a plain attribute: no state_dict entry, no module lookup
    _, _, cos, sin = views
    rot_dim, half = cfg.rotary_dim, cfg.rotary_dim // 2
    rot = x if rot_dim == x.shape[-1] else x[..., :rot_dim]
    flipped = torch.cat([-rot.narrow(-1, half, half), rot.narrow(-1, 0, half)], dim=-1)
    rotated = rot * cos + flipped * sin
    return rotated if rot is x else torch.cat([rotated, x[..., rot_dim:]], dim=-1)


class FusedRMSNorm(RMSNorm):
    """TransformerLens' RMSNorm arithmetic, op for op, without its hook and device bookkeeping
    when nothing hooks its scale or output."""

    def forward(self, x):
        if has_hooks(self.hook_scale) or has_hooks(self.hook_normalized) or x.device != self.w.device:
            return super().forward(x)
        xf = x if self.cfg.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
        return (xf / (xf.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()).to(self.cfg.dtype) * self.w


class FusedBlock(TransformerBlock):
    """A pre-norm sequential block that normalises its input once for queries, keys and values
    (TransformerLens runs ``ln1`` three times on the same tensor, and adds a scalar 0.0 twice) when
    nothing hooks ``ln1``; otherwise, and for every other block layout, TransformerLens' forward."""

    def forward(self, resid_pre, shortformer_pos_embed=None, past_kv_cache_entry=None, attention_mask=None):
        cfg = self.cfg
        if (shortformer_pos_embed is not None or cfg.use_attn_in or cfg.use_split_qkv_input or cfg.use_hook_mlp_in
                or cfg.use_normalization_before_and_after or cfg.attn_only or cfg.parallel_attn_mlp or cfg.n_devices != 1
                or cfg.original_architecture in POST_NORM_ARCHITECTURES
                or any(has_hooks(h) for h in self.ln1.modules() if isinstance(h, HookPoint))):
            return super().forward(resid_pre, shortformer_pos_embed, past_kv_cache_entry, attention_mask)
        resid_pre = self.hook_resid_pre(resid_pre)  # [batch, pos, d_model]
        normed = self.ln1(resid_pre)
        attn_out = self.hook_attn_out(self.attn(query_input=normed, key_input=normed, value_input=normed,
                                                past_kv_cache_entry=past_kv_cache_entry, attention_mask=attention_mask))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)  # [batch, pos, d_model]
        return self.hook_resid_post(resid_mid + self.apply_mlp(self.ln2(resid_mid)))  # [batch, pos, d_model]


# Subclasses that only swap ``forward``: same layout, so a block's attention can switch class in place.
class FusedAttention(Attention):
    forward = _fused_forward


class FusedGroupedQueryAttention(GroupedQueryAttention):
    forward = _fused_forward


FUSED_CLASSES: dict[type, type] = {Attention: FusedAttention, GroupedQueryAttention: FusedGroupedQueryAttention}
_PLAIN = {fused: plain for plain, fused in FUSED_CLASSES.items()}


def enable_fused_attention(model: HookedTransformer) -> list[int]:
    """Give every block whose attention class is allow-listed the fused forward, and its block the
    single ``ln1`` (idempotent); returns the blocks that have them."""
    fused = []
    allowed = model.cfg.original_architecture in FUSED_ARCHITECTURES
    for i, block in enumerate(model.blocks):
        cls = type(block.attn)
        if allowed and cls in FUSED_CLASSES and type(block) in (TransformerBlock, FusedBlock):
            block.attn.__class__ = FUSED_CLASSES[cls]
            block.__class__ = FusedBlock
            for norm in (block.ln1, block.ln2):
                if type(norm) is RMSNorm:
                    norm.__class__ = FusedRMSNorm
        if type(block.attn) in _PLAIN:
            fused.append(i)
    return fused


def disable_fused_attention(model: HookedTransformer) -> HookedTransformer:
    for block in model.blocks:
        if type(block.attn) in _PLAIN:
            block.attn.__class__ = _PLAIN[type(block.attn)]
        if type(block) is FusedBlock:
            block.__class__ = TransformerBlock
        for norm in (block.ln1, block.ln2):
            if type(norm) is FusedRMSNorm:
                norm.__class__ = RMSNorm
    return model
