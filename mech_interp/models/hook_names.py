"""Sites (``core.sites``) as TransformerLens hook points, and checks on layer indices and hook names."""

from __future__ import annotations

from typing import Sequence

from transformer_lens.utilities import get_act_name

from ..core.sites import Site, parse_site
from ..validation.errors import UsageError

# get_act_name's spelling of the components it does not name by themselves: (name, layer_type)
_GET_ACT_NAME = {
    "ln1_scale": ("scale", "ln1"), "ln1_normalized": ("normalized", "ln1"),
    "ln2_scale": ("scale", "ln2"), "ln2_normalized": ("normalized", "ln2"),
    "final_scale": ("scale", None), "final": ("normalized", None),
    "gate": ("gate", "attn"), "unembed_in": ("in", "unembed"), "unembed_out": ("out", "unembed"),
}


def hook_name(site: Site) -> str:
    """The HookedTransformer hook point of ``site``."""
    name, layer_type = _GET_ACT_NAME.get(site.component, (site.component, None))
    return get_act_name(name, site.block, layer_type)


def act_name(component: str, layer: int | None = None) -> str:
    return hook_name(Site(layer, component))


def resid_post(layer: int) -> str:
    return act_name("resid_post", layer)


def resid_pre(layer: int) -> str:
    return act_name("resid_pre", layer)


def pattern(layer: int) -> str:
    return act_name("pattern", layer)


def block_of(name: str) -> int | None:
    """The block of a hook point; None outside the blocks."""
    return parse_site(name).block


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
        try:
            site = parse_site(name)
        except ValueError as err:
            raise UsageError(str(err)) from None
        if site.pairwise:
            raise UsageError(f"hook point {name!r} is not indexed by [batch, pos, ...]: expected a residual, MLP or "
                             "per-head output such as blocks.0.hook_resid_post, blocks.0.hook_mlp_out, blocks.0.attn.hook_z")
