"""Where a model's residual positions and attention keys come from, beyond the input's tokens.

Two conventions exist in the studies, and every measurement needs to know both to index tokens:

- prefix positions (``n_prefix_tokens``): residual positions in front of the input's tokens on every
  block hook, which no input token produced: the trainer's learned sink vectors, a ViT's CLS and
  register tokens. ``prefix_roles`` names each one (``prefix``; ``cls``, ``reg0``, ...).
- key slots (``n_key_slots``): key columns in front of the positions in every attention pattern,
  with no residual position of their own: the trainer's attention-bias k'/v' slot.

A model's layout is read once, from what describes the model (a checkpoint's ``hooked_config.json``;
for a ViT, timm's own ``num_prefix_tokens``, in ``vit_hooks.token_roles``), and passed to the
measurements; analysis code never asks the model object for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLayout:
    n_prefix_tokens: int = 0
    n_key_slots: int = 0
    prefix_roles: tuple[str, ...] = ()  # one name per prefix position; "prefix" each when empty

    def __post_init__(self) -> None:
        if self.n_prefix_tokens < 0 or self.n_key_slots < 0:
            raise ValueError(f"a layout counts positions: got n_prefix_tokens={self.n_prefix_tokens}, "
                             f"n_key_slots={self.n_key_slots}")
        if self.prefix_roles and len(self.prefix_roles) != self.n_prefix_tokens:
            raise ValueError(f"{len(self.prefix_roles)} prefix roles for {self.n_prefix_tokens} prefix positions")

    @property
    def roles(self) -> tuple[str, ...]:
        return self.prefix_roles or ("prefix",) * self.n_prefix_tokens

    def first_token(self) -> int:
        """The residual position of the input's first token."""
        return self.n_prefix_tokens
