"""Reset massive activations at one site: to zero, or to means measured over other sequences.

``set_mean`` comes in the two forms a reader of the paper may mean, chosen explicitly:

- ``detected``: in each sequence the entries that pass the criterion are detected at run time and
  each is overwritten with the mean of its dim over the entries detected at the same kind of
  position while measuring (the first position and later positions keep separate means; an entry
  whose (kind, dim) was never seen while measuring is left as it is and counted ``unmatched``).
- ``fixed_sites`` (the upstream hook): given dims are always written at the first position and,
  when it is elsewhere, at each sequence's top-1 position (the largest |a| of the hidden state),
  whether or not they pass the criterion there; the means are the mean values at those two sites.

``MassiveMeans.counts`` says how many entries each mean came from; runs record it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int

from .criterion import MassiveCriterion, massive_mask
from .intervention import Intervention
from .layer_stats import LayerStats
from .running_stats import Mean

SITES = ("first_position", "later")  # later: other positions (detected) or the top-1 position (fixed_sites)


@dataclass(frozen=True)
class MassiveMeans:
    """Per-dim means of the values at one site's massive entries, with how many entries gave each."""

    site: str
    mode: Literal["detected", "fixed_sites"]
    first_position: dict[int, float]
    later: dict[int, float]
    counts: dict[str, dict[int, int]] = field(default_factory=dict)
    n_sequences: int = 0

    @classmethod
    def from_stats(cls, stats: LayerStats, site: str) -> "MassiveMeans":
        """``detected`` means from the massive entries a statistics pass found at ``site``."""
        from ..validation.errors import NoMassiveActivations

        rows = stats.massive[stats.massive["site"] == site]
        if rows.empty:
            raise NoMassiveActivations(
                f"no massive activations found at {site} over {stats.n_sequences} sequences: "
                f"choose another layer or loosen the criterion ({stats.criterion})"
            )

        def means(sub: pd.DataFrame) -> tuple[dict[int, float], dict[int, int]]:
            weighted = (sub["mean_value"] * sub["count"]).groupby(sub["dim"]).sum()
            counts = sub["count"].groupby(sub["dim"]).sum()
            return ({int(d): float(v) for d, v in (weighted / counts).items()},
                    {int(d): int(c) for d, c in counts.items()})

        first, first_n = means(rows[rows["position"] == 0])
        later, later_n = means(rows[rows["position"] > 0])
        return cls(site, "detected", first, later, {"first_position": first_n, "later": later_n}, stats.n_sequences)

    def table(self) -> pd.DataFrame:
        """One row per (site kind, dim): the value written and the number of entries it averages."""
        rows = [{"mode": self.mode, "where": where, "dim": d, "mean": v, "n_entries": self.counts.get(where, {}).get(d, 0)}
                for where in SITES for d, v in getattr(self, where).items()]
        return pd.DataFrame(rows, columns=["mode", "where", "dim", "mean", "n_entries"])

    def describe(self) -> dict[str, Any]:
        return {"site": self.site, "mode": self.mode, "n_sequences": self.n_sequences,
                "means": self.table().to_dict("records")}


class FixedSiteMeans:
    """Accumulates the ``fixed_sites`` means: the values of ``dims`` at the first position of every
    sequence, and at the top-1 position of every sequence whose top-1 is not the first position."""

    def __init__(self, site: str, dims: list[int]) -> None:
        self.site, self.dims = site, sorted(dims)
        self.first, self.later = Mean(), Mean()

    def record(self, acts: Float[torch.Tensor, "batch pos d_model"]) -> None:
        dims = torch.tensor(self.dims, device=acts.device)
        self.first.add(acts[:, 0, dims])
        top_pos = _top1_position(acts)
        elsewhere = top_pos != 0
        if elsewhere.any():
            rows = torch.arange(acts.shape[0], device=acts.device)[elsewhere]
            self.later.add(acts[rows, top_pos[elsewhere]][:, dims])

    def result(self) -> MassiveMeans:
        def means(stat: Mean) -> tuple[dict[int, float], dict[int, int]]:
            if stat.count == 0:
                return {}, {}
            return dict(zip(self.dims, stat.mean().tolist())), {d: stat.count for d in self.dims}

        first, first_n = means(self.first)
        later, later_n = means(self.later)
        return MassiveMeans(self.site, "fixed_sites", first, later, {"first_position": first_n, "later": later_n},
                            self.first.count)


def _top1_position(acts: Float[torch.Tensor, "batch pos d_model"]) -> Int[torch.Tensor, "batch"]:
    return acts.abs().flatten(1).argmax(1) // acts.shape[2]


class SetZero(Intervention):
    """Zero every massive entry at ``site``, detected per sequence with ``criterion``."""

    def __init__(self, site: str, criterion: MassiveCriterion = MassiveCriterion()) -> None:
        super().__init__("set_zero", site)
        self.criterion = criterion

    def forward(self, acts: Float[torch.Tensor, "batch pos d_model"], hook: Any = None) -> Float[torch.Tensor, "batch pos d_model"]:
        mask = massive_mask(acts, self.criterion)
        self.counts["replaced"] += int(mask.sum())
        return acts.masked_fill(mask, 0)


class SetMean(Intervention):
    """Write ``means`` into the massive entries (mode ``detected``) or into the fixed sites (mode
    ``fixed_sites``); see the module docstring."""

    def __init__(self, means: MassiveMeans, criterion: MassiveCriterion = MassiveCriterion()) -> None:
        super().__init__("set_mean", means.site)
        self.means, self.criterion = means, criterion
        size = 1 + max([*means.first_position, *means.later, 0])  # padded with NaN to d_model in forward
        for where in SITES:
            table = torch.full((size,), float("nan"), dtype=torch.float64)
            for d, v in getattr(means, where).items():
                table[d] = v
            self.register_buffer(where, table)  # [d_model]; NaN where no mean was measured

    def _lookup(self, where: str, d_model: int) -> torch.Tensor:
        table = getattr(self, where)
        if table.numel() < d_model:
            table = torch.cat([table, table.new_full((d_model - table.numel(),), float("nan"))])
        return table[:d_model]

    def forward(self, acts: Float[torch.Tensor, "batch pos d_model"], hook: Any = None) -> Float[torch.Tensor, "batch pos d_model"]:
        d_model = acts.shape[2]
        first = self._lookup("first_position", d_model).to(acts.device)
        later = self._lookup("later", d_model).to(acts.device)
        out = acts.clone()
        if self.means.mode == "fixed_sites":
            dims = (~first.isnan()).nonzero().flatten()
            out[:, 0, dims] = first[dims].to(acts.dtype)
            self.counts["replaced"] += acts.shape[0] * len(dims)
            top_pos = _top1_position(acts)
            rows = (top_pos != 0).nonzero().flatten()
            dims = (~later.isnan()).nonzero().flatten()
            if len(rows) and len(dims):
                out[rows[:, None], top_pos[rows][:, None], dims[None, :]] = later[dims].to(acts.dtype)
                self.counts["replaced"] += len(rows) * len(dims)
            return out
        b, p, d = massive_mask(acts, self.criterion).nonzero(as_tuple=True)
        values = torch.where(p == 0, first[d], later[d])
        matched = ~values.isnan()
        out[b[matched], p[matched], d[matched]] = values[matched].to(acts.dtype)
        self.counts["replaced"] += int(matched.sum())
        self.counts["unmatched"] += int((~matched).sum())
        return out
