"""A statistics pass over images: ``mech_interp.core``'s ``ActivationRecorder`` fed from ViT hooks,
with token roles as the labels, and the role columns (kind, register, row, col) added to its tables.

Nothing is cached: each hook folds its block's activations into streaming statistics.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from mech_interp.core.criterion import MassiveCriterion
from mech_interp.core.layer_stats import LayerStats
from mech_interp.core.recorder import ActivationRecorder

from . import hook_names
from .hooks import HookedViT
from .images import ImageSet

LABEL_COLUMNS = ("slot", "role")  # the recorder's label (the position) and its role name


def collect_layer_stats(
    hooked: HookedViT,
    images: ImageSet,
    transform: Callable,
    sites: Sequence[str] | None = None,
    criterion: MassiveCriterion = MassiveCriterion(),
    k: int = 3,
    batch_size: int = 16,
    n_top_entries: int = 20,
    extra_hooks: Sequence[tuple[str, Callable]] = (),
) -> LayerStats:
    """Per-site top-k, median and massive entries over ``images`` (default sites: every block's output).
    ``extra_hooks`` ride along in the same forwards (other statistics of the same pass)."""
    sites = list(sites or [hook_names.resid_post(b) for b in range(hooked.n_blocks)])
    for site in sites:
        hooked.check_name(site)
    recorder = ActivationRecorder(sites, k=k, criterion=criterion, n_top_entries=n_top_entries)

    def record(acts: Float[torch.Tensor, "batch token d_model"], hook) -> None:
        recorder.record(hook.name, acts, hooked.roles.labels(acts.shape[0]))

    with hooked.hooks([(s, record) for s in sites] + list(extra_hooks)):
        for batch, _ in tqdm(
            images.batches(batch_size, transform),
            total=-(-len(images) // batch_size),
            desc="statistics",
            unit="batch",
            leave=False,
        ):
            # on a GPU the recorder reads back once per batch; a batch whose candidates overflow runs again
            recorder.run_batch(lambda: hooked(batch))
    stats = recorder.result(
        layer_of=hook_names.block_of, label_name=hooked.roles.name, label_columns=LABEL_COLUMNS
    )
    stats.top_entries = _with_roles(stats.top_entries, hooked)
    stats.massive = _with_roles(stats.massive, hooked)
    return stats


def _with_roles(df: pd.DataFrame, hooked: HookedViT) -> pd.DataFrame:
    if df.empty:
        return df.assign(
            kind=pd.Series(dtype=str), register=pd.Series(dtype=int), row=pd.Series(dtype=int), col=pd.Series(dtype=int)
        )
    return hooked.roles.annotate(df.drop(columns=["slot"]))
