"""The streamed engine's site table: which tensor of an HF decoder layer each TransformerLens site is, hooked with
torch's own module hooks while the block's weights are in memory.

A hook function has TransformerLens' signature, ``fn(acts, hook)``, and replaces the activation when it returns a
tensor. Its ``hook`` is a ``StreamedHookPoint``: the site's name, ``layer()``, and the batch being run (its token ids
and its rows among the pass' windows), which a streamed pass needs where a whole forward would count batches, because
here every batch goes through a block before the next block is read.

Per site, in the shapes TransformerLens gives them (every family ``STREAMABLE`` lists has these modules):

- ``resid_pre``: the decoder layer's input ``[batch, pos, d_model]``;
- ``resid_post``: its output ``[batch, pos, d_model]``;
- ``attn_out``: the attention block's output, after ``o_proj`` ``[batch, pos, d_model]``;
- ``z``: the output projection's input (``o_proj``; Phi's ``dense``) seen per head ``[batch, pos, head_index, d_head]``
  (HF lays the heads out in that order);
- ``pattern``: the attention probabilities ``[batch, head_index, query_pos, key_pos]``, which only HF's eager attention
  computes (``StreamedModel(attention="eager")``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ...core.sites import parse_site
from ...validation.errors import UsageError

HookFn = Callable[[torch.Tensor, "StreamedHookPoint"], "torch.Tensor | None"]
SITES = ("resid_pre", "resid_post", "attn_out", "z", "pattern")


@dataclass(frozen=True)
class StreamedHookPoint:
    name: str  # the TransformerLens name of the site
    tokens: torch.Tensor  # the batch's token ids [batch, pos]
    rows: slice  # the batch's rows among the pass' windows

    def layer(self) -> int:
        return parse_site(self.name).block


OUTPUT_PROJECTIONS = ("o_proj", "dense")  # the attention's output matrix W_O, as the families name it (Phi: dense)


def _output_projection(attention: torch.nn.Module) -> torch.nn.Module:
    for name in OUTPUT_PROJECTIONS:
        if isinstance(getattr(attention, name, None), torch.nn.Module):
            return getattr(attention, name)
    raise UsageError(f"{type(attention).__name__} has no output projection named {' or '.join(OUTPUT_PROJECTIONS)}: "
                     "its z site cannot be hooked in a streamed pass")


def _replaced(value: torch.Tensor, result: torch.Tensor | None) -> torch.Tensor:
    return value if result is None else result


def _attach(layer: torch.nn.Module, component: str, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    attention = layer.self_attn
    if component == "resid_pre":
        return layer.register_forward_pre_hook(
            lambda module, args, kwargs: ((_replaced(args[0], fn(args[0])), *args[1:]), kwargs), with_kwargs=True)
    if component == "resid_post":
        return layer.register_forward_hook(lambda module, args, output: _replaced(output, fn(output)))
    if component == "attn_out":
        return attention.register_forward_hook(lambda module, args, output: (_replaced(output[0], fn(output[0])),
                                                                             *output[1:]))
    if component == "pattern":
        if attention.config._attn_implementation != "eager":
            raise ValueError("the pattern site needs HF's eager attention: StreamedModel(attention='eager')")
        return attention.register_forward_hook(lambda module, args, output: (output[0], _replaced(output[1],
                                                                                                  fn(output[1]))))
    if component == "z":
        d_head = attention.head_dim

        def per_head(module, args):
            flat = args[0]  # [batch, pos, head_index * d_head]
            z = flat.view(*flat.shape[:-1], -1, d_head)
            result = fn(z)
            return None if result is None else (result.reshape(flat.shape), *args[1:])

        return _output_projection(attention).register_forward_pre_hook(per_head)
    raise UsageError(f"site {component!r} cannot be hooked in a streamed pass: expected one of {', '.join(SITES)}")


@contextlib.contextmanager
def streamed_hooks(layer: torch.nn.Module, fwd_hooks: Sequence[tuple[str, HookFn]], tokens: torch.Tensor,
                   rows: slice) -> Iterator[None]:
    """``fwd_hooks`` (TransformerLens names of this block's sites) on ``layer`` for one batch's forward."""
    handles = []
    try:
        for name, fn in fwd_hooks:
            point = StreamedHookPoint(name, tokens, rows)
            handles.append(_attach(layer, parse_site(name).component, lambda acts, fn=fn, point=point: fn(acts, point)))
        yield
    finally:
        for handle in handles:
            handle.remove()
