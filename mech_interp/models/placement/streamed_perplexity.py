"""Perplexity one block's weights at a time, every condition of an intervention in the same pass over the weights.

Each condition (``None``: the original, or an ``Intervention`` applied to ``blocks.L.hook_resid_post`` of ``at_block``)
is a branch of ``streamed_branches``: the windows run through the blocks together up to ``at_block``, where each
condition takes its own copy of the residual streams. Resident memory is one residual stream per window up to
``at_block`` and one per window and condition after it. The NLL is summed batch by batch as ``metrics.perplexity``
sums it, on the logits HF's own forward computes, so every value equals a whole-model HF run's bit for bit on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from jaxtyping import Int

from ...core.intervention import Intervention
from ...metrics.perplexity import Perplexity
from .streamed_branches import streamed_branches
from .streamed_model import StreamedModel


def streamed_perplexity(
    streamed: StreamedModel,
    windows: Int[torch.Tensor, "window pos"],
    conditions: Mapping[str, Intervention | None],
    at_block: int | None = None,
    *,
    batch_size: int = 1,
    spill_dir: Path | None = None,
    progress: bool = True,
    desc: str = "perplexity",
) -> dict[str, Perplexity]:
    """PPL of every condition on ``windows``; ``spill_dir``: where the residual streams wait between blocks, instead
    of in memory."""
    if at_block is None and any(c is not None for c in conditions.values()):
        raise ValueError("an intervention needs the block it acts at")
    branches = {name: {at_block: [condition.as_hook()]} if condition is not None else {}
                for name, condition in conditions.items()}
    nll = streamed_branches(streamed, windows, branches, batch_size=batch_size, spill_dir=spill_dir,
                            progress=progress, desc=desc)
    return {name: Perplexity(nll_sum=sum(batch.double().sum().item() for batch in nll[name].split(batch_size)),
                             n_tokens=nll[name].numel(), n_windows=int(windows.shape[0]))
            for name in conditions}
