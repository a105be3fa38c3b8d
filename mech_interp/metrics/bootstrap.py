"""Spread over sequences: standard deviation and a percentile bootstrap confidence interval.

Each statistic is a mean over sequences; the bootstrap resamples whole sequences with replacement
(``n_boot`` draws from a seeded generator) and takes the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles of the resampled means. NaN entries (a sequence where the quantity does not exist) are
left out of each mean; a column with no finite value gives NaN.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

CI_DEFINITION = ("95% percentile bootstrap CI of the mean over sequences (sequences resampled with replacement, "
                 "{n_boot} draws, seed {seed})")


def nan_std(values: Float[torch.Tensor, "seq *rest"]) -> Float[torch.Tensor, "*rest"]:
    """Sample standard deviation over sequences (ddof 1), NaN entries left out; NaN with < 2 values."""
    finite = ~values.isnan()
    n = finite.sum(0)
    mean = values.nansum(0) / n
    sq = torch.where(finite, (values - mean) ** 2, torch.zeros_like(values)).sum(0)
    return torch.where(n > 1, (sq / (n - 1).clamp(min=1)).sqrt(), torch.full_like(mean, float("nan")))


def bootstrap_ci(values: Float[torch.Tensor, "seq *rest"], n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[Float[torch.Tensor, "*rest"], Float[torch.Tensor, "*rest"]]:
    """(low, high) percentile bootstrap interval of the NaN-ignoring mean over the first axis."""
    values = values.double()
    n = values.shape[0]
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    draws = values[idx.flatten()].reshape(n_boot, n, *values.shape[1:])  # [boot, seq, *rest]
    finite = ~draws.isnan()
    means = draws.nan_to_num(0.0).sum(1) / finite.sum(1)  # NaN where a draw holds no finite value
    lo = torch.nanquantile(means, (1 - level) / 2, dim=0)
    hi = torch.nanquantile(means, (1 + level) / 2, dim=0)
    return lo.float(), hi.float()
