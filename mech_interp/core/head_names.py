"""Heads as researchers write them: ``L18H8`` is head 8 of block 18, both 0-based TransformerLens indices (the block
``blocks.18.attn``, the head ``hook_z[..., 8, :]``). Every table, figure and summary names a head this way."""

from __future__ import annotations


def head_name(layer: int, head: int) -> str:
    return f"L{int(layer)}H{int(head)}"


def head_names(heads) -> str:
    """``[(5, 1), (6, 1)]`` -> ``"L5H1 L6H1"``: a head set in one cell of a table."""
    return " ".join(head_name(layer, head) for layer, head in heads)
