"""Streaming statistics updated batch by batch (after baukit's ``runningstats``).

Memory stays fixed whatever the number of batches. Each statistic keeps its state in tensors on
one device, and offers ``state_dict``/``load_state_dict`` (so a long pass can be checkpointed and
resumed) and ``to_`` (so it can follow the activations to a GPU or come back to the host).
Accumulation is in float64.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int


class Stat:
    """Base class: subclasses list their tensor state in ``_state`` and scalar state in ``_scalars``."""

    _state: tuple[str, ...] = ()
    _scalars: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type(self).__name__}
        out.update({name: getattr(self, name) for name in self._scalars})
        out.update({name: getattr(self, name) for name in self._state})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("type") != type(self).__name__:
            raise ValueError(f"state of a {state.get('type')} cannot be loaded into a {type(self).__name__}")
        for name in self._scalars:
            setattr(self, name, state[name])
        device = self.device
        for name in self._state:
            value = state[name]
            setattr(self, name, None if value is None else value.to(device))

    @property
    def device(self) -> torch.device:
        for name in self._state:
            value = getattr(self, name)
            if value is not None:
                return value.device
        return getattr(self, "_device", torch.device("cpu"))

    def to_(self, device: torch.device | str) -> "Stat":
        """Move the state in place (like baukit's ``to_``); later updates accumulate there."""
        self._device = torch.device(device)
        for name in self._state:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(self._device))
        return self


class Mean(Stat):
    """Running mean and (population) standard deviation of fixed-shape rows."""

    _state = ("sum", "sum_sq")
    _scalars = ("count",)

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sum_sq: torch.Tensor | None = None

    def add(self, rows: Float[torch.Tensor, "n *shape"]) -> None:
        rows = rows.detach().to(self.device, torch.float64)
        if self.sum is None:
            self.sum = torch.zeros(rows.shape[1:], dtype=torch.float64, device=rows.device)
            self.sum_sq = torch.zeros_like(self.sum)
        self.count += rows.shape[0]
        self.sum += rows.sum(0)
        self.sum_sq += (rows * rows).sum(0)

    def mean(self) -> torch.Tensor:
        if self.sum is None:
            raise ValueError("Mean has seen no rows")
        return self.sum / self.count

    def std(self) -> torch.Tensor:
        mean = self.mean()
        var = (self.sum_sq / self.count - mean * mean).clamp_min(0)
        return var.sqrt()


class TopK(Stat):
    """The k largest scores seen so far, each with a signed value and an integer metadata row."""

    _state = ("scores", "values", "meta")
    _scalars = ("k",)

    def __init__(self, k: int, n_meta: int) -> None:
        self.k = k
        self.scores = torch.empty(0, dtype=torch.float64)
        self.values = torch.empty(0, dtype=torch.float64)
        self.meta = torch.empty(0, n_meta, dtype=torch.long)

    def add(self, scores: Float[torch.Tensor, "n"], values: Float[torch.Tensor, "n"], meta: Int[torch.Tensor, "n m"]) -> None:
        device = self.device
        scores = torch.cat([self.scores, scores.detach().to(device, torch.float64)])
        values = torch.cat([self.values, values.detach().to(device, torch.float64)])
        meta = torch.cat([self.meta, meta.detach().to(device, torch.long)])
        keep = scores.topk(min(self.k, scores.numel())).indices
        self.scores, self.values, self.meta = scores[keep], values[keep], meta[keep]


class KeyedSums(Stat):
    """Per-key count and sums of value columns, for keys that are integer rows (e.g. position,
    dim, token): the state of "every massive entry seen, how often, with what mean value"."""

    _state = ("keys", "counts", "sums")
    _scalars = ("n_values",)

    def __init__(self, n_keys: int, n_values: int) -> None:
        self.n_values = n_values
        self.keys = torch.empty(0, n_keys, dtype=torch.long)
        self.counts = torch.empty(0, dtype=torch.long)
        self.sums = torch.empty(0, n_values, dtype=torch.float64)

    def add(self, keys: Int[torch.Tensor, "n k"], values: Float[torch.Tensor, "n v"]) -> None:
        if keys.shape[0] == 0:
            return
        device = self.device
        all_keys = torch.cat([self.keys, keys.detach().to(device, torch.long)])
        unique, inverse = all_keys.unique(dim=0, return_inverse=True)
        counts = torch.zeros(len(unique), dtype=torch.long, device=device)
        counts.index_add_(0, inverse, torch.cat([self.counts, torch.ones(len(keys), dtype=torch.long, device=device)]))
        sums = torch.zeros(len(unique), self.n_values, dtype=torch.float64, device=device)
        sums.index_add_(0, inverse, torch.cat([self.sums, values.detach().to(device, torch.float64)]))
        self.keys, self.counts, self.sums = unique, counts, sums
