"""TransformerLens hook-point names the studies use, and checks on layer indices and names."""

from __future__ import annotations

import re
from typing import Sequence

from transformer_lens.utils import get_act_name

from ..errors import UsageError

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_NOT_PER_POSITION = ("hook_attn_scores", "hook_pattern")  # [batch, head, query_pos, key_pos]


def resid_post(layer: int) -> str:
    return get_act_name("resid_post", layer)


def resid_pre(layer: int) -> str:
    return get_act_name("resid_pre", layer)


def block_of(hook_name: str) -> int | None:
    match = _BLOCK.match(hook_name)
    return int(match.group(1)) if match else None


def check_layer(n_layers: int, layer: int, model_name: str = "the model") -> int:
    """A 0-based block index in range; anything else (negative indices included) is refused."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise UsageError(f"layer {layer!r} is not an integer: expected a 0-based block index")
    if not 0 <= layer < n_layers:
        raise UsageError(f"layer {layer} out of range: {model_name} has blocks 0..{n_layers - 1} (0-based)")
    return layer


def check_hook_names(hook_dict, hook_names: Sequence[str]) -> None:
    for name in hook_names:
        if name not in hook_dict:
            raise UsageError(f"unknown hook point {name!r}: expected a name from model.hook_dict, e.g. {resid_post(0)}")
        if name.endswith(_NOT_PER_POSITION):
            raise UsageError(f"hook point {name!r} is not indexed by [batch, pos, ...]: expected a residual, MLP or "
                             "per-head output such as blocks.0.hook_resid_post, blocks.0.hook_mlp_out, blocks.0.attn.hook_z")
