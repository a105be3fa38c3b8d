"""Hook-site names, spelled as TransformerLens' ``utils.get_act_name`` spells them.

Built here rather than imported: ``transformer_lens`` takes seconds to import and pulls in the
language-model stack, which the vision study does not need. ``tests/test_vit_hooks.py`` checks
every name against ``get_act_name``.

Shapes (timm ``VisionTransformer``; tokens ordered CLS, registers, patches row by row):

- ``blocks.{i}.hook_resid_pre``   [batch, token, d_model]  input of block i (block 0: embeddings + positions)
- ``blocks.{i}.hook_attn_out``    [batch, token, d_model]  attention output after layer scale (``ls1``)
- ``blocks.{i}.hook_mlp_out``     [batch, token, d_model]  MLP output after layer scale (``ls2``)
- ``blocks.{i}.hook_resid_post``  [batch, token, d_model]  output of block i (= ``forward_intermediates``)
- ``blocks.{i}.attn.hook_pattern`` [batch, head, query, key]  attention probabilities (softmax output)
- ``ln_final.hook_normalized``    [batch, token, d_model]  the final LayerNorm (``model.norm``): the features
"""

from __future__ import annotations

BLOCK_KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post", "pattern")
FINAL = "ln_final.hook_normalized"


def act_name(kind: str, block: int) -> str:
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown hook kind {kind!r}: expected one of {', '.join(BLOCK_KINDS)}")
    return f"blocks.{block}.attn.hook_{kind}" if kind == "pattern" else f"blocks.{block}.hook_{kind}"


def resid_pre(block: int) -> str:
    return act_name("resid_pre", block)


def resid_post(block: int) -> str:
    return act_name("resid_post", block)


def pattern(block: int) -> str:
    return act_name("pattern", block)


def parse(name: str) -> tuple[str, int | None]:
    """(kind, block) of a hook name; ``("final", None)`` for the final LayerNorm."""
    if name == FINAL:
        return "final", None
    parts = name.split(".")
    if len(parts) in (3, 4) and parts[0] == "blocks" and parts[1].isdigit():
        kind = parts[-1].removeprefix("hook_")
        if kind in BLOCK_KINDS and (kind == "pattern") == (len(parts) == 4 and parts[2] == "attn"):
            return kind, int(parts[1])
    raise ValueError(
        f"unknown hook point {name!r}: expected blocks.N.hook_{{resid_pre,attn_out,mlp_out,resid_post}}, "
        f"blocks.N.attn.hook_pattern or {FINAL}"
    )
