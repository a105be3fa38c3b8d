"""The intervention protocol (after pyvene): a small module with tensor state and a named site.

An ``Intervention`` says which activation site it acts on (``site``, e.g. a TransformerLens hook
name or a ViT block input) and maps the activations there to new ones in ``forward``. Its tensor
state (means, masks) lives in buffers, so ``.to(device)`` and ``state_dict`` work as for any
module. ``counts`` tallies what it changed, for the manifest. ``as_hook()`` gives the
``(site, fn(acts, hook))`` pair that TransformerLens' ``model.hooks(fwd_hooks=...)`` takes (and
``models.hook_names.engine_hooks``, which gives each site the name the model's engine uses).
"""

from __future__ import annotations

from typing import Any, Callable

import torch


class Intervention(torch.nn.Module):
    def __init__(self, name: str, site: str) -> None:
        super().__init__()
        self.name = name
        self.site = site
        self.counts: dict[str, int] = {"replaced": 0, "unmatched": 0}

    def forward(self, acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def as_hook(self) -> tuple[str, Callable[[torch.Tensor, Any], torch.Tensor]]:
        def fn(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
            return self(acts, hook)

        return (self.site, fn)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, site={self.site!r}"
