"""Perplexity one block's weights at a time, every condition of an intervention in the same pass over the weights.

The windows run through the blocks together up to ``at_block``; there each condition (``None``: the original, or an
``Intervention`` applied to the block's output, ``blocks.L.hook_resid_post``) takes its own copy of the residual
streams, and the later blocks run every copy before they are dropped. The final norm and the LM head are read last.
Resident memory is one residual stream per window up to ``at_block`` and one per window and condition after it. The
NLL is ``metrics.perplexity``'s, on the logits HF's own forward computes, so every value equals a whole-model HF run's
bit for bit on the CPU.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from jaxtyping import Int
from tqdm.auto import tqdm

from ...core.dtype_range import ActivationRangeError, check_peak, needs_range_check
from ...core.intervention import Intervention
from ...metrics.perplexity import Perplexity, next_token_nll
from .residual_streams import ResidualStreams
from .streamed_model import StreamedModel


def streamed_perplexity(
    streamed: StreamedModel,
    windows: Int[torch.Tensor, "window pos"],
    conditions: Mapping[str, Intervention | None],
    at_block: int | None = None,
    *,
    batch_size: int = 1,
    progress: bool = True,
    desc: str = "perplexity",
) -> dict[str, Perplexity]:
    """PPL of every condition on ``windows``. In float16/bfloat16 every block's output is checked against the dtype's
    range, and a non-finite loss stops the run, as ``metrics.perplexity`` does."""
    if at_block is None and any(c is not None for c in conditions.values()):
        raise ValueError("an intervention needs the block it acts at")
    batches = [b.to(streamed.device) for b in windows.split(batch_size)]
    half = needs_range_check(streamed.dtype)
    streams = ResidualStreams(len(batches), device=streamed.device)
    arguments = streamed.embed(batches, streams)
    branches: dict[str | None, list[torch.Tensor]] = {None: streams.tensors()}
    for i in tqdm(range(streamed.n_layers), desc=f"{desc} (streamed blocks)", unit="block", disable=not progress):
        with streamed.block(i) as layer, torch.inference_mode():
            for streams in branches.values():
                for j, args in enumerate(arguments):
                    streams[j] = layer(streams[j], **args)  # [batch, pos, d_model]
                    if half:
                        check_peak(streams[j].abs().amax().item(), streamed.dtype, f"blocks.{i}.hook_resid_post")
            if i == at_block:
                shared = branches.pop(None)
                branches = {name: [h if c is None else c(h) for h in shared] for name, c in conditions.items()}
    if None in branches:  # no intervention: the one stream is the original's
        branches = {name: branches[None] for name in conditions}
    results = {}
    with streamed.head() as logits, torch.inference_mode():
        for name, streams in branches.items():
            nll_sum, n_tokens = 0.0, 0
            for tokens, h in zip(batches, streams):
                nll = next_token_nll(logits(h), tokens)
                batch_sum = nll.double().sum().item()
                if half and not math.isfinite(batch_sum):
                    raise ActivationRangeError(f"{desc}: the loss is not finite in {streamed.dtype}: rerun in float32")
                nll_sum += batch_sum
                n_tokens += nll.numel()
            results[name] = Perplexity(nll_sum=nll_sum, n_tokens=n_tokens, n_windows=int(windows.shape[0]))
    return results
