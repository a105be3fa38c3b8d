"""Experiment 3 (files): upstream's DINOv2-reg register means (``../shared/data/dinov2-reg-feat-mean``),
loaded on the CPU into ``RegisterMeans`` and summarised per model size. Needs no model."""

from __future__ import annotations

import pandas as pd

from mech_interp.runs.experiment import ExperimentResult

from ..configs import UpstreamMeansConfig
from ..figures import register_mean_lines
from ..register_means import RegisterMeans
from .register_means import describe, largest_entries


def run(config: UpstreamMeansConfig) -> ExperimentResult:
    tables, figures, lines, summary = {}, {}, [], {}
    for size in config.sizes:
        means = RegisterMeans.upstream(size)
        part, summary[size] = describe(
            means, f"upstream register means, DINOv2-reg ViT-{size[0].upper()} ({means.source})"
        )
        lines += part
        table = means.table()
        tables[f"{size}_means"] = table
        tables[f"{size}_summary"] = means.summary()
        figures[f"{size}_means"] = register_mean_lines(
            table, largest_entries(means), f"upstream mean register features, ViT-{size[0].upper()}"
        )
    tables["shapes"] = pd.DataFrame([{"size": s, "n_blocks": len(summary[s]["per_block"])} for s in config.sizes])
    return ExperimentResult(tables=tables, figures=figures, summary=summary, lines=lines)
