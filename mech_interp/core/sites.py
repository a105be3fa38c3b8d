"""A site of a transformer's forward: a block (or none, outside the blocks) and a component of it, named
as TransformerLens names its hook points, whichever library runs the model.

The studies, their tables and their command lines name sites by these TransformerLens-style hook
names (``blocks.3.hook_resid_post``, ``blocks.3.attn.hook_pattern``, ``ln_final.hook_normalized``);
each model engine resolves a ``Site`` to where it hooks it (``models.hook_names`` for TransformerLens,
``vit_hooks.hook_names`` for timm). ``parse_site`` is the one reader of those names; ``Site.name`` is
its inverse. No model library is imported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Where each component sits inside block N: the name's part after "blocks.N.", as TransformerLens spells it.
IN_BLOCK = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_in": "hook_attn_in",
    "q_input": "hook_q_input",
    "k_input": "hook_k_input",
    "v_input": "hook_v_input",
    "attn_out": "hook_attn_out",
    "mlp_in": "hook_mlp_in",
    "mlp_out": "hook_mlp_out",
    "ln1_scale": "ln1.hook_scale",
    "ln1_normalized": "ln1.hook_normalized",
    "ln2_scale": "ln2.hook_scale",
    "ln2_normalized": "ln2.hook_normalized",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "rot_q": "attn.hook_rot_q",
    "rot_k": "attn.hook_rot_k",
    "attn_scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern",
    "z": "attn.hook_z",
    "result": "attn.hook_result",
    "gate": "attn.hook_gate",  # the trainer's gated attention: [batch, pos, head_index]
    "pre": "mlp.hook_pre",
    "mid": "mlp.hook_mid",
    "post": "mlp.hook_post",
    "pre_linear": "mlp.hook_pre_linear",
}
# Components outside the blocks: the whole name.
OUTSIDE_BLOCKS = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "final_scale": "ln_final.hook_scale",
    "final": "ln_final.hook_normalized",  # the final norm's output
    "unembed_in": "unembed.hook_in",
    "unembed_out": "unembed.hook_out",
}
# Components indexed [batch, head, query, key] rather than [batch, pos, ...].
PAIRWISE = ("attn_scores", "pattern")

_BY_PART = {part: component for component, part in IN_BLOCK.items()}
_BY_NAME = {name: component for component, name in OUTSIDE_BLOCKS.items()}
_BLOCK = re.compile(r"blocks\.(0|[1-9][0-9]*)\.(.+)")  # ASCII digits, no leading zero: the spelling Site.name writes
EXPECTED = ("blocks.N.hook_{resid_pre,resid_post,attn_out,mlp_out,...}, blocks.N.attn.hook_{pattern,attn_scores,z,...}, "
            "blocks.N.mlp.hook_{pre,post,...} or " + ", ".join(OUTSIDE_BLOCKS.values()))


@dataclass(frozen=True)
class Site:
    block: int | None  # None: outside the blocks (embeddings, the final norm, the unembedding)
    component: str

    def __post_init__(self) -> None:
        if self.component in IN_BLOCK:
            if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 0:
                raise ValueError(f"site {self.component!r} is inside a block: block {self.block!r} is not a 0-based index")
        elif self.component in OUTSIDE_BLOCKS:
            if self.block is not None:
                raise ValueError(f"site {self.component!r} is outside the blocks: block {self.block!r} must be None")
        else:
            raise ValueError(f"unknown site component {self.component!r}: expected one of "
                             f"{', '.join([*IN_BLOCK, *OUTSIDE_BLOCKS])}")

    @property
    def name(self) -> str:
        """The TransformerLens-style hook name, which ``parse_site`` reads back."""
        if self.block is None:
            return OUTSIDE_BLOCKS[self.component]
        return f"blocks.{self.block}.{IN_BLOCK[self.component]}"

    @property
    def pairwise(self) -> bool:
        """Indexed [batch, head, query, key] (attention scores and probabilities), not by position."""
        return self.component in PAIRWISE


def parse_site(name: str) -> Site:
    """The site a TransformerLens-style hook name names; ValueError for anything else."""
    if name in _BY_NAME:
        return Site(None, _BY_NAME[name])
    match = _BLOCK.fullmatch(name)
    if match is not None and match[2] in _BY_PART:
        return Site(int(match[1]), _BY_PART[match[2]])
    raise ValueError(f"unknown hook point {name!r}: expected {EXPECTED}")
