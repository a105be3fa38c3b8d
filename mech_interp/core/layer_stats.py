"""What a statistics pass returns: per-site summary, largest entries and massive entries, as tables."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .criterion import MassiveCriterion

SUMMARY_DEFINITIONS = {
    "topK": "mean over sequences of the K-th largest |a| of that sequence's hidden state (all positions x dims)",
    "median": "mean over sequences of the lower median |a| of that sequence's hidden state",
    "mean_abs": "mean over sequences of the mean |a|",
    "ratio_of_means_top1_median": "mean top1 / mean median (a ratio of the two means)",
    "mean_ratio_top1_median": "mean over sequences of top1 / median of the same sequence",
    "seq_fraction_with_massive": "share of sequences with at least one massive entry at that site",
}


@dataclass
class LayerStats:
    summary: pd.DataFrame  # one row per site
    top_entries: pd.DataFrame  # the largest |a| over all sequences, per site
    massive: pd.DataFrame  # massive entries grouped by (site, position, dim, label)
    criterion: MassiveCriterion
    n_sequences: int

    def first_massive_layer(self, min_fraction: float = 0.5) -> int | None:
        """First layer whose massive entries show up in at least ``min_fraction`` of sequences
        (a lone outlier in one sequence should not move the intervention layer)."""
        rows = self.summary[self.summary["seq_fraction_with_massive"] >= min_fraction].dropna(subset=["layer"])
        return None if rows.empty else int(rows["layer"].min())

    def massive_dims(self, layer: int | None = None) -> list[int]:
        rows = self.massive if layer is None else self.massive[self.massive["layer"] == layer]
        return sorted(int(d) for d in rows["dim"].unique())
