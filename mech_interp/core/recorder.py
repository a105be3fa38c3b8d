"""Streaming per-site statistics of activations, fed ``(site, activations, position labels)``.

Model-agnostic: a language model's hooks feed it token ids as labels, a ViT's feed token roles.
For every site and sequence it folds in the top-k |a| with their (position, label, dim), the
median |a| (exact lower median over all positions x dims of that sequence), the mean |a|, and
the massive entries by a ``MassiveCriterion``. Memory is fixed whatever the number of sequences;
``state_dict``/``load_state_dict`` checkpoint a pass and ``to_`` moves it between devices. On a GPU
each layer's reductions stay on the device until the batch ends (see ``transfer_mode``).
Activations indexed ``[batch, pos, ...]`` with more trailing axes (per-head ``[batch, pos, head,
d_head]``) are flattened so that ``dim = head * d_head + i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int

from ..validation.errors import UsageError
from .criterion import MassiveCriterion
from .dtype_range import check_peak, check_range, needs_range_check
from .layer_stats import LayerStats
from .order_statistics import at_least, order_statistics
from .radix_median import lower_median
from .running_stats import KeyedSums, Mean, TopK
from .transfer_mode import use_deferred


class TopKTooLarge(UsageError):
    """``k`` asks for more of the largest entries than one hidden state holds."""

    def __init__(self, k: int, n_entries: int, site: str) -> None:
        super().__init__(f"k={k} is larger than the {n_entries} entries of one hidden state at {site}")
        self.k, self.n_entries, self.site = k, n_entries, site


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


@dataclass
class _Summary:
    """One site's reductions of one batch, on the host: what ``_fold`` turns into statistics.

    ``seq``/``index`` hold every entry at or above ``min(massive lower bound, k-th largest |a|)``
    of its sequence (a handful per sequence), ordered by sequence, then by flat index."""

    top: torch.Tensor  # [batch, k] float32, descending
    median: torch.Tensor  # [batch] float32, the lower median of |a|
    mean_abs: torch.Tensor  # [batch] float32
    seq: torch.Tensor  # [hits] int64
    index: torch.Tensor  # [hits] int64, into the flattened [pos * d_model] hidden state
    scores: torch.Tensor  # [hits] float32, |a|
    values: torch.Tensor  # [hits] float32, a


@dataclass
class _Pending:
    """One site's reductions of one batch, still on the device (the deferred path)."""

    site: str
    labels: torch.Tensor
    d_model: int
    n_flat: int  # pos * d_model
    dtype: torch.dtype
    packed: torch.Tensor  # [batch, k + 4 + 3 * capacity] float64, see ``_pack``
    capacity: int


class ActivationRecorder:
    """Fold activations into streaming statistics, site by site.

    ``record(site, acts, labels)``: ``acts`` is ``[batch, pos, ...]``, ``labels`` an integer per
    ``[batch, pos]`` (a token id, a token role) that the tables report with each entry.

    ``record`` reduces the activations at once but folds nothing: ``flush`` folds a whole batch, so
    that a batch that fails or must run again leaves nothing behind, and the folds of all sites run
    back to back (in the hooks, between layers, each took ~3x as long, its code and data gone cold).
    Activations on a GPU take the deferred path (``transfer_mode``): ``record`` queues device
    reductions and ``flush`` moves a whole batch to the host in one copy. A flush can find that a
    sequence had more candidate entries than the ``capacity`` kept per sequence on the device; it
    then drops the batch, raises the capacity and returns False, and the batch must run again:
    ``run_batch(forward)`` does that loop.
    """

    def __init__(self, sites: Sequence[str], k: int = 3, criterion: MassiveCriterion = MassiveCriterion(),
                 n_top_entries: int = 20, capacity: int = 64):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.sites = list(sites)
        self.k = k
        self.criterion = criterion
        self.capacity = max(capacity, k)
        self._sites = {site: _SiteStats(k, n_top_entries) for site in self.sites}
        self._pending: list[_Pending] = []
        self._summaries: list[tuple[str, _Summary, torch.Tensor, int]] = []  # (site, summary, labels, d_model)

    @property
    def n_sequences(self) -> int:
        return max((s.n_sequences for s in self._sites.values()), default=0)

    def record(self, site: str, acts: Float[torch.Tensor, "batch pos *rest"], labels: Int[torch.Tensor, "batch pos"]) -> None:
        if site not in self._sites:
            raise KeyError(f"site {site!r} is not recorded: expected one of {', '.join(self.sites)}")
        acts = acts.detach().flatten(2)
        if not 1 <= self.k <= acts[0].numel():
            raise TopKTooLarge(self.k, acts[0].numel(), site)
        if use_deferred(acts.device):
            self._pending.append(self._pack(site, acts, labels))
            return
        check_range(acts, site)
        self._summaries.append((site, self._summarise_on_host(acts), labels, acts.shape[2]))

    def _summarise_on_host(self, acts: torch.Tensor) -> _Summary:
        mag = acts.abs().float()  # [batch, pos, d_model]
        top, median = order_statistics(mag, self.k)
        # One search finds both the top-k and the massive entries: everything at or above the lower
        # of the two thresholds (a handful per sequence), sorted out afterwards.
        seq, index = at_least(mag, torch.minimum(self.criterion.lower_bound(median), top[:, -1]))
        mag, flat = mag.flatten(1), acts.flatten(1)  # [batch, pos * d_model]
        return _Summary(top, median, mag.mean(1), seq, index, mag[seq, index], flat[seq, index].float())

    def _pack(self, site: str, acts: torch.Tensor, labels: torch.Tensor) -> _Pending:
        """Reduce on the device without reading anything back: the top ``capacity`` |a| of each
        sequence with their flat index and signed value, the number of entries at or above the
        candidate bound (to tell at the flush whether the capacity held them all), the median and
        the mean, packed into one float64 row per sequence (float32 values and int64 indices below
        2**53 are exact in float64). The peak that the flush checks is the top score: ``topk``
        ranks NaN above everything, so it is NaN exactly when ``amax`` would be."""
        flat = acts.flatten(1)
        mag = flat.abs().float()
        m = min(self.capacity, mag.shape[1])
        scores, index = mag.topk(m, dim=1)  # descending
        median = lower_median(mag, acts.dtype)  # the lower median, as on the host
        bound = torch.minimum(self.criterion.lower_bound(median), scores[:, self.k - 1])
        n_candidates = (mag >= bound[:, None]).sum(1)
        packed = torch.cat([
            scores[:, : self.k], median[:, None], mag.mean(1, keepdim=True), bound[:, None],
            n_candidates[:, None], scores, index, flat.gather(1, index).float(),
        ], dim=1).double()
        return _Pending(site, labels, acts.shape[2], flat.shape[1], acts.dtype, packed, m)

    def flush(self) -> bool:
        """Fold every queued batch into the statistics: one host copy per device. False (and
        nothing folded) when a sequence had more candidates than the capacity; rerun the batch."""
        summaries, self._summaries = self._summaries, []
        if self._pending and not self._summarise_pending(summaries):
            return False
        for site, summary, labels, d_model in summaries:
            self._fold(site, summary, labels, d_model)
        return True

    def _summarise_pending(self, summaries: list[tuple[str, _Summary, torch.Tensor, int]]) -> bool:
        """Read the queued device reductions back and add their summaries to ``summaries``; False
        when the capacity was too small (the capacity is raised)."""
        pending, self._pending = self._pending, []
        by_device: dict[torch.device, list[_Pending]] = {}
        for p in pending:
            by_device.setdefault(p.packed.device, []).append(p)
        rows: dict[int, torch.Tensor] = {}
        for device, group in by_device.items():
            # labels on the device travel in the same copy (token ids are exact in float64)
            labels = list({id(p.labels): p.labels for p in pending if p.labels.device == device}.values())
            parts = [p.packed for p in group] + labels
            host = torch.cat([t.flatten().double() for t in parts]).to("cpu", copy=True)  # the batch's one copy
            for t, part in zip(parts, host.split([t.numel() for t in parts])):
                rows[id(t)] = part.view(t.shape)
        for p in pending:
            if p.labels.device.type != "cpu":
                p.labels = rows[id(p.labels)].long()
        rows = {id(p): rows[id(p.packed)] for p in pending}
        k = self.k
        for p in pending:  # an overflowed half-precision forward is refused, not rerun
            if needs_range_check(p.dtype):
                check_peak(float(rows[id(p)][:, 0].max()), p.dtype, p.site)  # column 0: the top |a|, the peak
        needed = max(int(rows[id(p)][:, k + 3].max()) for p in pending)  # candidates of the fullest sequence
        if any(int(rows[id(p)][:, k + 3].max()) > p.capacity for p in pending):
            self.capacity = max(self.capacity, 1 << (needed - 1).bit_length())
            return False
        for p in pending:
            row, m = rows[id(p)], p.capacity
            scores, index, values = row[:, k + 4: k + 4 + m], row[:, k + 4 + m: k + 4 + 2 * m], row[:, k + 4 + 2 * m:]
            hit = scores >= row[:, k + 2: k + 3]
            seq = torch.arange(row.shape[0])[:, None].expand_as(hit)[hit]
            index = index[hit].long()
            order = (seq * p.n_flat + index).argsort()  # as the host path lists them: by sequence, then index
            summary = _Summary(row[:, :k].float(), row[:, k].float(), row[:, k + 1].float(), seq[order],
                               index[order], scores[hit][order].float(), values[hit][order].float())
            summaries.append((p.site, summary, p.labels, p.d_model))
        return True

    def run_batch(self, forward: Callable[[], Any]) -> None:
        """Call ``forward`` (which records through hooks) and flush; again, with the raised capacity,
        until the batch fits. A failing forward leaves no half-recorded batch behind."""
        try:
            forward()
            while not self.flush():
                forward()
        finally:
            self._pending.clear()
            self._summaries.clear()

    def _fold(self, site: str, s: _Summary, labels: torch.Tensor, d_model: int) -> None:
        state = self._sites[site]
        ratio = s.top[:, 0] / s.median
        state.per_sequence.add(torch.cat([s.top, s.median[:, None], s.mean_abs[:, None], ratio[:, None]], dim=1))
        pos, dim = s.index // d_model, s.index % d_model
        label = labels.detach().cpu()[s.seq, pos]
        self._add_top(state, s.seq, pos, dim, label, s.scores, s.values)

        massive = self.criterion.is_massive(s.scores, s.median[s.seq])
        state.with_massive += int(s.seq[massive].unique().numel())
        keys = torch.stack([pos[massive], dim[massive], label[massive]], dim=1)
        state.massive.add(keys, torch.stack([s.values[massive], s.values[massive].abs()], dim=1).double())
        state.n_sequences += s.top.shape[0]

    def _add_top(self, state: _SiteStats, seq, pos, dim, label, scores, values) -> None:
        """Keep the ``k`` largest candidates of each sequence (there can be more on ties)."""
        order = scores.argsort(descending=True)
        order = order[seq[order].argsort(stable=True)]  # grouped by sequence, largest first in each
        grouped = seq[order]
        rank = torch.arange(len(order)) - torch.searchsorted(grouped, grouped)
        keep = order[rank < self.k]
        meta = torch.stack([seq[keep] + state.n_sequences, pos[keep], dim[keep], label[keep]], dim=1)
        state.top.add(scores[keep], values[keep], meta)

    def _settle(self) -> None:
        if not self.flush():
            raise RuntimeError("a sequence had more candidate entries than the recorder kept on the device: "
                               "record through run_batch(forward), which reruns such a batch")

    def state_dict(self) -> dict[str, Any]:
        self._settle()
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
        self._settle()
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
