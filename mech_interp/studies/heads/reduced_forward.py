"""One forward, reduced inside hooks: per-block top-1 |a|, the massive entries (detected or given)
and their values, and the next-token NLL of every sequence.

A clean run detects the massive entries of each sequence at each probed block's ``hook_resid_post``
(the criterion of ``core.criterion``); an ablated run reads the values at those same entries, so a
change is always measured at the entry the clean model had, never at whatever is largest afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int

from ...core.criterion import MassiveCriterion, massive_mask
from ...core.token_layout import TokenLayout
from ...metrics.layer_stats import PREFIX_NAME
from ...metrics.perplexity import next_token_nll
from ...models.hook_names import engine_hooks, resid_post
from ...models.hooked_model import HookedModel


@dataclass
class Probe:
    layers: list[int]
    top1: Float[torch.Tensor, "layer batch"]  # max |a| over (position, dim) of each sequence
    entries: dict[int, Int[torch.Tensor, "_n 3"]]  # per block: (batch row, position, dim)
    values: dict[int, Float[torch.Tensor, "_n"]]  # the value at each entry
    nll: Float[torch.Tensor, "_n_seq"] = field(default_factory=lambda: torch.zeros(0))  # summed next-token NLL
    n_predicted: int = 0  # predicted tokens per sequence

    def ppl(self) -> float:
        return float(torch.exp(self.nll.double().sum() / (self.n_predicted * len(self.nll))))


@torch.inference_mode()
def probe(model: HookedModel, tokens: Int[torch.Tensor, "batch pos"], layers: list[int],
          criterion: MassiveCriterion, fwd_hooks: list | None = None, entries: dict[int, torch.Tensor] | None = None,
          logits: bool = True, start: tuple[int, torch.Tensor] | None = None) -> Probe:
    """Run ``model`` on ``tokens`` with ``fwd_hooks`` and read ``layers``' resid_post. Without
    ``entries`` the massive entries are detected; with them, their values are read. ``start``
    = (block, residual before it) restarts the forward at that block (``start_at_layer``)."""
    device = model.cfg.device
    top1 = torch.zeros(len(layers), tokens.shape[0])
    found: dict[int, torch.Tensor] = {}
    values: dict[int, torch.Tensor] = {}
    row = {layer: i for i, layer in enumerate(layers)}

    def read(acts: Float[torch.Tensor, "batch pos d_model"], hook) -> None:
        layer = hook.layer()
        top1[row[layer]] = acts.detach().abs().flatten(1).amax(1).float().cpu()
        at = entries[layer] if entries is not None else massive_mask(acts, criterion).nonzero().cpu()
        found[layer] = at
        idx = at.to(acts.device)
        values[layer] = acts[idx[:, 0], idx[:, 1], idx[:, 2]].float().cpu()

    stop = None if logits else max(layers) + 1
    hooks = list(fwd_hooks or []) + [(resid_post(layer), read) for layer in layers]
    with engine_hooks(model, hooks):
        if start is None:
            out = model(tokens.to(device), return_type="logits" if logits else None, stop_at_layer=stop)
        else:
            out = model(start[1], start_at_layer=start[0], return_type="logits" if logits else None, stop_at_layer=stop)
    result = Probe(layers, top1, found, values)
    if logits:
        result.nll = next_token_nll(out, tokens.to(out.device)).double().sum(1).float().cpu()
        result.n_predicted = tokens.shape[1] - 1
    return result


def top_entry(probe_: Probe, layer: int, n_rows: int) -> Int[torch.Tensor, "_k 3"]:
    """Per sequence, its entry with the largest |value| at ``layer`` (sequences without one are left out)."""
    at, val = probe_.entries[layer], probe_.values[layer]
    picks = []
    for b in range(n_rows):
        mine = (at[:, 0] == b).nonzero().flatten()
        if len(mine):
            picks.append(at[mine[val[mine].abs().argmax()]])
    return torch.stack(picks) if picks else torch.zeros(0, 3, dtype=torch.long)


def residual_tokens(tokenizer: Any, tokens: Int[torch.Tensor, "pos"], *, layout: TokenLayout) -> list[str]:
    """A label per residual position: ``<prefix>`` for the layout's learned prefix positions, then the
    decoded tokens."""
    return [PREFIX_NAME] * layout.n_prefix_tokens + [tokenizer.decode([t]) for t in tokens.tolist()]
