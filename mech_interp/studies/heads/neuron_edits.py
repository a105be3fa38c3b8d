"""Edits below the component level: one MLP neuron silenced (an intervention on ``hook_post``), or
single weights set to zero for the duration of a ``with`` block (restored afterwards, even on error)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from jaxtyping import Float

from ...core.intervention import Intervention
from ...models.hook_names import act_name


class ZeroNeuron(Intervention):
    """Hidden neuron ``neuron`` of block ``layer``'s MLP outputs 0 (``hook_post``: after the activation
    and, for gated MLPs, the gate), so it writes nothing through ``W_out``."""

    def __init__(self, layer: int, neuron: int):
        super().__init__(f"zero_neuron_{layer}.{neuron}", act_name("post", layer))
        self.layer, self.neuron = layer, neuron

    def forward(self, post: Float[torch.Tensor, "batch pos d_mlp"], hook: Any = None) -> Float[torch.Tensor, "batch pos d_mlp"]:
        post = post.clone()
        post[..., self.neuron] = 0
        self.counts["replaced"] += post.shape[0] * post.shape[1]
        return post


@contextmanager
def zeroed_weights(param: torch.nn.Parameter, indices: list[tuple[int, ...]]) -> Iterator[None]:
    """``param[index] = 0`` for every index inside the block; the old values come back after it."""
    saved = [param.data[index].clone() for index in indices]
    try:
        with torch.no_grad():
            for index in indices:
                param.data[index] = 0
        yield
    finally:
        with torch.no_grad():
            for index, value in zip(indices, saved):
                param.data[index] = value
