"""TransformerLens-style hook sites on a timm ``VisionTransformer``, for capture and intervention.

Built on timm's own modules with PyTorch module hooks (``hook_names.timm_site`` says which module each site
is on); ``block.forward`` is never replaced:

- ``hook_resid_pre``: a forward pre-hook on ``blocks[i]`` (its input);
- ``hook_resid_post``: a forward hook on ``blocks[i]`` (its output, what ``forward_intermediates`` returns);
- ``hook_attn_out`` / ``hook_mlp_out``: forward hooks on ``blocks[i].ls1`` / ``ls2`` (the branch output
  after layer scale, just before it is added to the residual stream; an ``Identity`` where the
  model has no layer scale);
- ``attn.hook_pattern``: a forward hook on ``blocks[i].attn.attn_drop``, which receives the softmax
  probabilities on timm's explicit attention path. While such a hook is attached, that block's
  ``attn.fused_attn`` (the flag ``timm.layers.set_fused_attn`` sets for new models) is off, and it is
  restored when the hook is removed: the fused kernel never materialises the probabilities;
- ``ln_final.hook_normalized``: a forward hook on ``model.norm``.

A hook function is called as TransformerLens calls it, ``fn(activations, hook)`` with ``hook.name``
the site's name; returning a tensor replaces the activations (an intervention), returning None
leaves them. ``with hooked.hooks([(name, fn), ...]):`` attaches them for the block's duration;
``add_hook`` returns a handle whose ``remove()`` detaches one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from jaxtyping import Float

from . import hook_names
from .token_roles import TokenRoles

HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]


@dataclass(frozen=True)
class HookPoint:
    """What a hook function receives as ``hook``: the site's name (TransformerLens' ``hook.name``)."""

    name: str
    kind: str
    block: int | None


class _Handle:
    def __init__(self, handle: torch.utils.hooks.RemovableHandle, on_remove: Callable[[], None] | None) -> None:
        self._handle, self._on_remove = handle, on_remove

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            if self._on_remove is not None:
                self._on_remove()
            self._handle = None


class HookedViT:
    """A timm ``VisionTransformer`` with named hook sites; its own forward is timm's, untouched."""

    def __init__(self, model: torch.nn.Module, img_size: int) -> None:
        blocks = getattr(model, "blocks", [])
        if not blocks or not all(
            hasattr(b, "ls1") and hasattr(b, "ls2") and hasattr(getattr(b, "attn", None), "attn_drop") for b in blocks
        ):
            raise ValueError(
                f"{type(model).__name__} does not have timm's Block layout (norm1, attn with attn_drop, "
                "ls1, norm2, mlp, ls2) in every block: its hook sites cannot be placed"
            )
        self.model = model
        self.img_size = img_size
        self.roles = TokenRoles.of(model, img_size)
        self.n_blocks = len(model.blocks)
        self._pattern_hooks = [0] * self.n_blocks
        self._fused_default = [getattr(b.attn, "fused_attn", False) for b in model.blocks]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hook_names(self) -> list[str]:
        return [hook_names.act_name(k, i) for i in range(self.n_blocks) for k in hook_names.BLOCK_KINDS] + [
            hook_names.FINAL
        ]

    def check_name(self, name: str) -> hook_names.TimmSite:
        where = hook_names.resolve(name)
        if where.site.block is not None and not 0 <= where.site.block < self.n_blocks:
            raise ValueError(f"hook point {name!r} is out of range: the model has blocks 0..{self.n_blocks - 1}")
        return where

    def add_hook(self, name: str, fn: HookFn) -> _Handle:
        where = self.check_name(name)
        kind, block = where.site.component, where.site.block
        point = HookPoint(name, kind, block)
        module = self.model.get_submodule(where.module)
        if where.reads_input:

            def pre(module: torch.nn.Module, args: tuple) -> tuple | None:
                out = fn(args[0], point)
                return None if out is None else (out, *args[1:])

            return _Handle(module.register_forward_pre_hook(pre), None)

        def post(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            return fn(output, point)

        on_remove = None
        if kind == "pattern":
            self._pattern_hooks[block] += 1
            self.model.blocks[block].attn.fused_attn = False

            def on_remove(block: int = block) -> None:
                self._pattern_hooks[block] -= 1
                if self._pattern_hooks[block] == 0:
                    self.model.blocks[block].attn.fused_attn = self._fused_default[block]

        return _Handle(module.register_forward_hook(post), on_remove)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator["HookedViT"]:
        for name, _ in fwd_hooks:
            self.check_name(name)  # all of them before any is attached
        handles = []
        try:
            for name, fn in fwd_hooks:
                handles.append(self.add_hook(name, fn))
            yield self
        finally:
            for handle in reversed(handles):
                handle.remove()

    def __call__(
        self, images: Float[torch.Tensor, "batch 3 height width"]
    ) -> Float[torch.Tensor, "batch token d_model"]:
        """The final features (after ``model.norm``), through timm's ``forward_features``."""
        with torch.inference_mode():
            return self.model.forward_features(images.to(self.device))

    def run_with_cache(
        self, images: Float[torch.Tensor, "batch 3 height width"], names: Sequence[str]
    ) -> tuple[Float[torch.Tensor, "batch token d_model"], dict[str, torch.Tensor]]:
        """(final features, {name: activations}) for the hook points ``names``."""
        cache: dict[str, torch.Tensor] = {}

        def keep(acts: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = acts.detach().clone()

        with self.hooks([(n, keep) for n in names]):
            out = self(images)
        return out, cache
