"""Several versions of a model in one pass over its weights, one block's weights at a time: the branches of an
experiment (the clean model and each intervention), each with its own hooks, read once per block for all of them.

A branch runs on the shared residual streams (the trunk) until its first hooked block; there it takes its own copy of
the trunk and runs that block, and every later one, with its hooks. Branches without hooks stay on the trunk. So
resident memory is one residual stream per window for the trunk and one per window and forked branch. After each
block, ``observe(branch, block, rows, output)`` sees every branch's output batch by batch (``blocks.L.hook_resid_post``;
a branch still on the trunk sees the trunk's): for each batch, the trunk's branches before the forked ones, each in
the order the branches are given. Spilled, every stream waits on disk between blocks, and a fork links the trunk's
files instead of holding a copy. With ``logits``, the final norm
and the LM head are read last and the next-token NLL of every window is returned per branch. Values equal a
whole-model HF forward's with the same hooks bit for bit on the CPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ...core.dtype_range import ActivationRangeError, check_peak, needs_range_check
from ...metrics.perplexity import next_token_nll
from .residual_streams import ResidualStreams
from .streamed_model import StreamedModel
from .streamed_sites import HookFn, streamed_hooks

TRUNK = None  # the streams of every branch that has not forked yet
BranchHooks = Mapping[int, Sequence[tuple[str, HookFn]]]  # block -> (TransformerLens site name, fn) pairs


def streamed_branches(
    streamed: StreamedModel,
    windows: Int[torch.Tensor, "window pos"],
    branches: Mapping[str, BranchHooks],
    *,
    last: int | None = None,
    batch_size: int = 1,
    spill_dir: Path | None = None,
    observe: Callable[[str, int, slice, torch.Tensor], None] | None = None,
    logits: bool = True,
    progress: bool = True,
    desc: str = "branches",
) -> dict[str, Float[torch.Tensor, "window pos_minus_1"]]:
    """Every branch through blocks 0..``last`` (default all), then, with ``logits``, the next-token NLL of every
    window per branch (``metrics.perplexity``'s, on HF's logits); without, ``{}``. ``spill_dir``: the residual streams
    wait there between blocks, one folder per branch, instead of in memory (``residual_streams``). In float16/bfloat16
    every output is checked against the dtype's range, and a non-finite loss stops the run, as ``metrics.perplexity``
    does."""
    last = streamed.n_layers - 1 if last is None else last
    batches = [b.to(streamed.device) for b in windows.split(batch_size)]
    rows = [slice(j * batch_size, j * batch_size + len(b)) for j, b in enumerate(batches)]
    half = needs_range_check(streamed.dtype)
    folder = (lambda k: Path(spill_dir) / f"branch_{k}") if spill_dir is not None else (lambda k: None)
    trunk = ResidualStreams(len(batches), folder("trunk"), streamed.device)
    arguments = streamed.embed(batches, trunk)
    groups: dict[str | None, ResidualStreams] = {TRUNK: trunk}
    forks = {name: min(hooks, default=None) for name, hooks in branches.items()}
    for i in tqdm(range(last + 1), desc=f"{desc} (streamed blocks)", unit="block", disable=not progress):
        for k, (name, at) in enumerate(forks.items()):
            if at == i:
                groups[name] = groups[TRUNK].fork(folder(k))
        if TRUNK in groups and all(at is not None and at <= i for at in forks.values()):
            groups.pop(TRUNK).remove()  # every branch has its own
        with streamed.block(i) as layer, torch.inference_mode():
            for key, group in groups.items():
                hooks = list(branches[key].get(i, ())) if key is not TRUNK else []
                carried = [name for name in branches if (name if name in groups else TRUNK) == key]
                for j, tokens in enumerate(batches):
                    with streamed_hooks(layer, hooks, tokens, rows[j]):
                        out = layer(group[j], **arguments[j][i])  # [batch, pos, d_model]
                    if half:
                        check_peak(out.abs().amax().item(), streamed.dtype, f"blocks.{i}.hook_resid_post")
                    if observe is not None:
                        for name in carried:
                            observe(name, i, rows[j], out)
                    group[j] = out
                group.commit()
        for group in groups.values():
            group.prune()
    if not logits:
        return {}
    nll: dict[str | None, torch.Tensor] = {}
    with streamed.head() as head, torch.inference_mode():
        for key, group in groups.items():
            per_window = torch.cat([next_token_nll(head(group[j]), tokens).cpu() for j, tokens in enumerate(batches)])
            if half and not math.isfinite(per_window.double().sum().item()):
                raise ActivationRangeError(f"{desc}: the loss is not finite in {streamed.dtype}: rerun in float32")
            nll[key] = per_window
    return {name: nll[name if name in nll else TRUNK] for name in branches}
