"""Streaming per-site statistics of activations, fed ``(site, activations, position labels)``.

Model-agnostic: a language model's hooks feed it token ids as labels, a ViT's feed token roles.
For every site and sequence it folds in the top-k |a| with their (position, label, dim), the
median |a| (exact lower median over all positions x dims of that sequence), the mean |a|, and
the massive entries by a ``MassiveCriterion``. Memory is fixed whatever the number of sequences;
``state_dict``/``load_state_dict`` checkpoint a pass and ``to_`` moves it between devices.
Activations indexed ``[batch, pos, ...]`` with more trailing axes (per-head ``[batch, pos, head,
d_head]``) are flattened so that ``dim = head * d_head + i``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int

from ..errors import UsageError
from .criterion import MassiveCriterion
from .dtype_range import check_range
from .layer_stats import LayerStats
from .order_statistics import at_least, order_statistics
from .running_stats import KeyedSums, Mean, TopK


class _SiteStats:
    """Everything the recorder keeps for one site."""

    def __init__(self, k: int, n_top_entries: int) -> None:
        # per sequence: [top1..k, median, mean_abs, top1 / median]
        self.per_sequence = Mean()
        self.top = TopK(n_top_entries, n_meta=4)  # meta: sequence, position, dim, label
        self.massive = KeyedSums(n_keys=3, n_values=2)  # key: position, dim, label; values: a, |a|
        self.with_massive = 0
        self.n_sequences = 0

    def stats(self):
        return {"per_sequence": self.per_sequence, "top": self.top, "massive": self.massive}


class ActivationRecorder:
    """Fold activations into streaming statistics, site by site.

    ``record(site, acts, labels)``: ``acts`` is ``[batch, pos, ...]``, ``labels`` an integer per
    ``[batch, pos]`` (a token id, a token role) that the tables report with each entry.
    """

    def __init__(self, sites: Sequence[str], k: int = 3, criterion: MassiveCriterion = MassiveCriterion(),
                 n_top_entries: int = 20):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.sites = list(sites)
        self.k = k
        self.criterion = criterion
        self._sites = {site: _SiteStats(k, n_top_entries) for site in self.sites}

    @property
    def n_sequences(self) -> int:
        return max((s.n_sequences for s in self._sites.values()), default=0)

    def record(self, site: str, acts: Float[torch.Tensor, "batch pos *rest"], labels: Int[torch.Tensor, "batch pos"]) -> None:
        state = self._sites[site]
        check_range(acts, site)
        acts = acts.detach().flatten(2)
        batch, _, d_model = acts.shape
        if not 1 <= self.k <= acts[0].numel():
            raise UsageError(f"--k {self.k} is larger than the {acts[0].numel()} entries of one hidden state at {site}")
        flat = acts.flatten(1)  # [batch, pos*d_model]
        mag = flat.abs().float()
        top_values, median = (t.to(mag.device) for t in order_statistics(mag, self.k))
        ratio = top_values[:, 0] / median
        row = torch.cat([top_values, median[:, None], mag.mean(1, keepdim=True), ratio[:, None]], dim=1)
        state.per_sequence.add(row)

        # One pass over the hidden state finds both the top-k and the massive entries: everything at
        # or above the lower of the two thresholds (a handful per sequence), sorted out afterwards.
        bound = self.criterion.lower_bound(median)
        seq_idx, flat_idx = at_least(mag, torch.minimum(bound, top_values[:, -1]))
        on_device = (seq_idx.to(mag.device), flat_idx.to(mag.device))
        scores, values = mag[on_device].cpu(), flat[on_device].float().cpu()
        pos, dim = flat_idx // d_model, flat_idx % d_model
        label = labels.detach().cpu()[seq_idx, pos]
        self._add_top(state, seq_idx, pos, dim, label, scores, values)

        massive = self.criterion.is_massive(scores, median.cpu()[seq_idx])
        state.with_massive += int(seq_idx[massive].unique().numel())
        keys = torch.stack([pos[massive], dim[massive], label[massive]], dim=1)
        state.massive.add(keys, torch.stack([values[massive], values[massive].abs()], dim=1).double())
        state.n_sequences += batch

    def _add_top(self, state: _SiteStats, seq, pos, dim, label, scores, values) -> None:
        """Keep the ``k`` largest candidates of each sequence (there can be more on ties)."""
        order = scores.argsort(descending=True)
        order = order[seq[order].argsort(stable=True)]  # grouped by sequence, largest first in each
        grouped = seq[order]
        rank = torch.arange(len(order)) - torch.searchsorted(grouped, grouped)
        keep = order[rank < self.k]
        meta = torch.stack([seq[keep] + state.n_sequences, pos[keep], dim[keep], label[keep]], dim=1)
        state.top.add(scores[keep], values[keep], meta)

    def state_dict(self) -> dict[str, Any]:
        return {"sites": self.sites, "k": self.k, "criterion": (self.criterion.min_abs, self.criterion.min_ratio),
                "per_site": {site: {"with_massive": s.with_massive, "n_sequences": s.n_sequences,
                                    **{name: stat.state_dict() for name, stat in s.stats().items()}}
                             for site, s in self._sites.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = (self.sites, self.k, (self.criterion.min_abs, self.criterion.min_ratio))
        if (list(state["sites"]), state["k"], tuple(state["criterion"])) != mine:
            raise ValueError("recorder state was saved for other sites, k or criterion")
        for site, saved in state["per_site"].items():
            s = self._sites[site]
            s.with_massive, s.n_sequences = saved["with_massive"], saved["n_sequences"]
            for name, stat in s.stats().items():
                stat.load_state_dict(saved[name])

    def to_(self, device: torch.device | str) -> "ActivationRecorder":
        for s in self._sites.values():
            for stat in s.stats().values():
                stat.to_(device)
        return self

    def result(self, layer_of: Callable[[str], int | None] = lambda site: None,
               label_name: Callable[[int], str] = str, label_columns: tuple[str, str] = ("label", "label_name")) -> LayerStats:
        """Tables of everything recorded. ``layer_of`` maps a site to its layer index (or None),
        ``label_name`` a label to its text; ``label_columns`` names the two label columns."""
        label_id, label_text = label_columns
        summary, top_rows, massive_rows = [], [], []
        for site in self.sites:
            s = self._sites[site]
            if s.per_sequence.count == 0:
                raise RuntimeError(f"no activations reached {site}: was the forward stopped before it?")
            mean, std = s.per_sequence.mean().tolist(), s.per_sequence.std().tolist()
            k = self.k
            row: dict[str, Any] = {"site": site, "layer": layer_of(site)}
            row.update({f"top{r + 1}": mean[r] for r in range(k)})
            row["median"] = mean[k]
            row["mean_abs"] = mean[k + 1]
            row["ratio_of_means_top1_median"] = mean[0] / mean[k] if mean[k] > 0 else float("inf")
            row["mean_ratio_top1_median"] = mean[k + 2]
            row["top1_std"] = std[0]
            row["median_std"] = std[k]
            row["n_sequences"] = s.per_sequence.count
            row["seq_fraction_with_massive"] = s.with_massive / s.per_sequence.count
            summary.append(row)
            top = s.top.to_("cpu")
            for rank, (score, value, (q, p, d, t)) in enumerate(zip(top.scores.tolist(), top.values.tolist(), top.meta.tolist())):
                top_rows.append({"site": site, "layer": layer_of(site), "rank": rank + 1, "abs": score, "value": value,
                                 "sequence": q, "position": p, "dim": d, label_id: t, label_text: label_name(t)})
            massive = s.massive.to_("cpu")
            for (p, d, t), c, (total, total_abs) in zip(massive.keys.tolist(), massive.counts.tolist(), massive.sums.tolist()):
                massive_rows.append({"site": site, "layer": layer_of(site), "position": p, "dim": d, label_id: t,
                                     label_text: label_name(t), "count": c, "mean_value": total / c,
                                     "mean_abs": total_abs / c})
        massive_cols = ["site", "layer", "position", "dim", label_id, label_text, "count", "mean_value", "mean_abs"]
        return LayerStats(
            summary=pd.DataFrame(summary).astype({"layer": "Int64"}),
            top_entries=pd.DataFrame(top_rows),
            massive=pd.DataFrame(massive_rows, columns=massive_cols).astype({"layer": "Int64"}),
            criterion=self.criterion,
            n_sequences=self.n_sequences,
        )
