"""Sites (``core.sites``) as hook points, on either engine, and checks on layer indices and hook names.

The studies name a site by its TransformerLens name (``get_act_name``'s spelling, which ``Site.name``
writes). ``engine_hooks(model, fwd_hooks)`` adds hooks by the name the model's engine gives the hook
point: a ``HookedTransformer`` has exactly those names; on a ``TransformerBridge`` each site in
``BRIDGE_NATIVE`` is hooked by the bridge's own name (``blocks.3.hook_resid_post`` is its
``blocks.3.hook_out``), and anything else by the TransformerLens name, which the bridge registers as an
alias of the same hook point (tests/test_engines.py checks both). A hook function that needs its site
takes it from what it was registered for, never from ``hook.name``, which differs between engines.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from ..core.sites import Site, parse_site
from ..validation.errors import UsageError
from .engines import TRANSFORMER_BRIDGE, engine_of

if TYPE_CHECKING:  # importing this module imports no torch
    from .hooked_model import HookedModel

# The bridge's own name of each site the studies hook (block N), the same in TransformerLens 3.9's beta and 4.3.
BRIDGE_NATIVE = {
    "embed": "embed.hook_out",
    "resid_pre": "blocks.N.hook_in",
    "resid_mid": "blocks.N.ln2.hook_in",
    "resid_post": "blocks.N.hook_out",
    "attn_out": "blocks.N.attn.hook_out",
    "mlp_out": "blocks.N.mlp.hook_out",
    "z": "blocks.N.attn.o.hook_in",
    "q": "blocks.N.attn.q.hook_out",
    "attn_scores": "blocks.N.attn.hook_attn_scores",
    "pattern": "blocks.N.attn.hook_pattern",
    "post": "blocks.N.mlp.out.hook_in",
}


def hook_name(site: Site) -> str:
    """The name of ``site`` that the studies use: TransformerLens', on either engine."""
    return site.name


def engine_hook_name(model: HookedModel, name: str) -> str:
    """``name`` (a TransformerLens hook name) as ``model``'s engine names the hook point: a bridge's own name where
    ``BRIDGE_NATIVE`` lists the site, ``name`` itself otherwise."""
    if engine_of(model) != TRANSFORMER_BRIDGE:
        return name
    try:
        site = parse_site(name)
    except ValueError:
        return name
    native = BRIDGE_NATIVE.get(site.component)
    if native is None:
        return name
    return native if site.block is None else native.replace("blocks.N.", f"blocks.{site.block}.")


@contextmanager
def engine_hooks(model: HookedModel, fwd_hooks: Sequence[tuple[str, Callable]]) -> Iterator[None]:
    """``model.hooks(fwd_hooks=...)`` with each TransformerLens name given as the engine names its hook point."""
    with model.hooks(fwd_hooks=[(engine_hook_name(model, name), fn) for name, fn in fwd_hooks]):
        yield


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
