"""Sites (``mech_interp.core.sites``) on a timm ``VisionTransformer``: their TransformerLens-style names, as
TransformerLens' ``utils.get_act_name`` spells them, and the timm module each one is hooked on.

Built without TransformerLens: it takes seconds to import and pulls in the language-model stack, which
the vision study does not need. ``tests/test_vit_hooks.py`` checks every name against ``get_act_name``.

Shapes (timm ``VisionTransformer``; tokens ordered CLS, registers, patches row by row), and the module:

- ``blocks.{i}.hook_resid_pre``   [batch, token, d_model]  input of block i (block 0: embeddings + positions);
  the input of ``blocks.{i}``
- ``blocks.{i}.hook_attn_out``    [batch, token, d_model]  attention output after layer scale: ``blocks.{i}.ls1``
- ``blocks.{i}.hook_mlp_out``     [batch, token, d_model]  MLP output after layer scale: ``blocks.{i}.ls2``
- ``blocks.{i}.hook_resid_post``  [batch, token, d_model]  output of ``blocks.{i}`` (= ``forward_intermediates``)
- ``blocks.{i}.attn.hook_pattern`` [batch, head, query, key]  attention probabilities (softmax output): the output
  of ``blocks.{i}.attn.attn_drop`` on timm's explicit attention path (dropout is the identity in eval)
- ``ln_final.hook_normalized``    [batch, token, d_model]  the final LayerNorm, ``norm``: the features
"""

from __future__ import annotations

from dataclasses import dataclass

from mech_interp.core.sites import Site, parse_site

BLOCK_KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post", "pattern")
FINAL = Site(None, "final").name
# where each block site is hooked, relative to blocks.{i}, and whether it reads the module's input
_IN_BLOCK = {"resid_pre": ("", True), "attn_out": ("ls1", False), "mlp_out": ("ls2", False),
             "resid_post": ("", False), "pattern": ("attn.attn_drop", False)}
EXPECTED = f"blocks.N.hook_{{resid_pre,attn_out,mlp_out,resid_post}}, blocks.N.attn.hook_pattern or {FINAL}"


@dataclass(frozen=True)
class TimmSite:
    site: Site
    module: str  # the timm module's path (``model.get_submodule``)
    reads_input: bool  # a forward pre-hook (the module's input) rather than a forward hook (its output)

    @property
    def name(self) -> str:
        return self.site.name


def timm_site(site: Site) -> TimmSite:
    """Where ``site`` is hooked on a timm ViT; ValueError for a site it does not have."""
    if site.component == "final":
        return TimmSite(site, "norm", False)
    if site.component not in _IN_BLOCK:
        raise ValueError(f"unknown hook point {site.name!r}: expected {EXPECTED}")
    path, reads_input = _IN_BLOCK[site.component]
    return TimmSite(site, f"blocks.{site.block}" + (f".{path}" if path else ""), reads_input)


def resolve(name: str) -> TimmSite:
    """The timm site of a hook name; ValueError for any other name."""
    try:
        site = parse_site(name)
    except ValueError:
        raise ValueError(f"unknown hook point {name!r}: expected {EXPECTED}") from None
    return timm_site(site)


def act_name(kind: str, block: int) -> str:
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown hook kind {kind!r}: expected one of {', '.join(BLOCK_KINDS)}")
    return Site(block, kind).name


def resid_pre(block: int) -> str:
    return act_name("resid_pre", block)


def resid_post(block: int) -> str:
    return act_name("resid_post", block)


def pattern(block: int) -> str:
    return act_name("pattern", block)


def parse(name: str) -> tuple[str, int | None]:
    """(kind, block) of a hook name; ``("final", None)`` for the final LayerNorm."""
    site = resolve(name).site
    return site.component, site.block


def block_of(name: str) -> int | None:
    """The block of a hook name; None for the final LayerNorm."""
    return resolve(name).site.block
