"""Streaming statistics updated batch by batch (after baukit's runningstats): memory stays fixed."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int


class Mean:
    """Running mean and standard deviation of fixed-shape rows, accumulated in float64."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._sum_sq: torch.Tensor | None = None

    def add(self, rows: Float[torch.Tensor, "n *shape"]) -> None:
        rows = rows.detach().to("cpu", torch.float64)
        if self._sum is None:
            self._sum = torch.zeros(rows.shape[1:], dtype=torch.float64)
            self._sum_sq = torch.zeros(rows.shape[1:], dtype=torch.float64)
        self.count += rows.shape[0]
        self._sum += rows.sum(0)
        self._sum_sq += (rows * rows).sum(0)

    def mean(self) -> torch.Tensor:
        if self._sum is None:
            raise ValueError("Mean has seen no rows")
        return self._sum / self.count

    def std(self) -> torch.Tensor:
        mean = self.mean()
        var = (self._sum_sq / self.count - mean * mean).clamp_min(0)
        return var.sqrt()


class TopK:
    """The k largest scores seen so far, each with an integer metadata row (e.g. seq, pos, dim)."""

    def __init__(self, k: int, n_meta: int) -> None:
        self.k = k
        self.scores = torch.empty(0, dtype=torch.float64)
        self.values = torch.empty(0, dtype=torch.float64)
        self.meta = torch.empty(0, n_meta, dtype=torch.long)

    def add(self, scores: Float[torch.Tensor, "n"], values: Float[torch.Tensor, "n"], meta: Int[torch.Tensor, "n m"]) -> None:
        scores = torch.cat([self.scores, scores.detach().to("cpu", torch.float64)])
        values = torch.cat([self.values, values.detach().to("cpu", torch.float64)])
        meta = torch.cat([self.meta, meta.detach().to("cpu", torch.long)])
        keep = scores.topk(min(self.k, scores.numel())).indices
        self.scores, self.values, self.meta = scores[keep], values[keep], meta[keep]
