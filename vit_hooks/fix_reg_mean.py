"""Fix-Reg-Mean (upstream ``main_vit.py --reg_feat_mean``): before every block, the register tokens
are overwritten with that block's mean register features; every other token is left alone.

One ``Intervention`` (``mech_interp.core.intervention``) per block, at ``blocks.{i}.hook_resid_pre``,
holding that block's ``[n_registers, d_model]`` mean as a buffer. ``FixRegMean.hooks()`` gives the
``(site, fn)`` pairs ``HookedViT.hooks`` takes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from jaxtyping import Float

from mech_interp.core.intervention import Intervention

from . import hook_names
from .register_means import RegisterMeans


class RegisterMeanAt(Intervention):
    """Writes ``mean`` into tokens ``1 .. n_registers`` of one block's input."""

    def __init__(self, block: int, mean: Float[torch.Tensor, "n_registers d_model"]) -> None:
        super().__init__("fix_reg_mean", hook_names.resid_pre(block))
        self.register_buffer("mean", mean.detach().clone().float())

    def forward(
        self, acts: Float[torch.Tensor, "batch token d_model"], hook: Any = None
    ) -> Float[torch.Tensor, "batch token d_model"]:
        n = self.mean.shape[0]
        out = acts.clone()
        out[:, 1 : 1 + n] = self.mean.to(acts.device, acts.dtype)
        self.counts["replaced"] += acts.shape[0] * self.mean.numel()
        return out


class FixRegMean(torch.nn.Module):
    def __init__(self, means: RegisterMeans) -> None:
        super().__init__()
        self.source = means.source
        self.blocks = torch.nn.ModuleList(RegisterMeanAt(b, means.means[b]) for b in range(means.n_blocks))

    def hooks(self) -> list[tuple[str, Callable[[torch.Tensor, Any], torch.Tensor]]]:
        return [block.as_hook() for block in self.blocks]

    @property
    def replaced(self) -> int:
        return sum(b.counts["replaced"] for b in self.blocks)
