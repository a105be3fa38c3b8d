"""Experiment 5a: set_zero / set_mean on the massive activations of one block's output (paper Table 3's
intervention, on a ViT), registers or not, with ``mech_interp.core``'s ``SetZero`` / ``SetMean``.

The first ``n_ref`` images (default: half) are the reference: a statistics pass over them picks the
block (the first whose output has massive entries in at least half of them) and gives the ``detected``
means (per dim, CLS and other tokens apart: core's "first position" is CLS here). The other images are
evaluated: in each, the entries passing the criterion are detected at run time and reset; the output
is compared with the unmodified model's (``evaluation``).
"""

from __future__ import annotations

from typing import Any

from mech_interp.core.massive_reset import MassiveMeans, SetMean, SetZero
from mech_interp.runs.experiment import ExperimentResult
from mech_interp.validation.errors import NoMassiveActivations, NothingToMeasure, UsageError

from .. import hook_names
from ..configs import MassiveResetConfig
from ..evaluation import DEFINITIONS, Resume, compare_conditions
from ..figures import condition_bars
from ..images import ImageSet
from ..layer_stats import collect_layer_stats
from ..session import Session


def run(session: Session, config: MassiveResetConfig, pieces: Any = None) -> ExperimentResult:
    hooked, options, images = session.hooked, session.options, session.images
    if config.block is not None and config.block >= hooked.n_blocks:
        raise UsageError(
            f"--block {config.block} is out of range: the model has blocks 0..{hooked.n_blocks - 1} (0-based)"
        )
    if len(images) < 2:
        raise NothingToMeasure(
            "massive reset needs at least 2 images: reference images for the means, others to evaluate"
        )
    n_ref = config.n_ref if config.n_ref is not None else len(images) // 2
    if n_ref >= len(images):
        raise UsageError(
            f"--n-ref {n_ref} leaves no image to evaluate: there are {len(images)}; pass --n-ref "
            f"between 1 and {len(images) - 1}"
        )
    reference = ImageSet(images.root, images.layout, images.items[:n_ref])
    evaluated = ImageSet(images.root, images.layout, images.items[n_ref:])
    stats = collect_layer_stats(
        hooked, reference, session.vit.preprocessing.eval, criterion=options.criterion, batch_size=options.batch_size
    )
    block = config.block if config.block is not None else stats.first_massive_layer()
    if block is None:
        top = stats.summary.loc[stats.summary["top1"].idxmax()]
        raise NoMassiveActivations(
            f"no block of {session.entry.name} has massive activations (|a| > {options.min_abs:g} and >= "
            f"{options.min_ratio:g}x the median) in half of {n_ref} reference images; the largest mean top-1 is "
            f"{top.top1:.1f} at block {int(top.layer)} ({top.ratio_of_means_top1_median:.0f}x its median): "
            "nothing to reset"
        )
    site = hook_names.resid_post(block)
    means = MassiveMeans.from_stats(stats, site)
    zero, mean = SetZero(site, options.criterion), SetMean(means, options.criterion)
    table = compare_conditions(
        hooked,
        evaluated,
        session.vit.preprocessing.eval,
        {"set_zero": [zero.as_hook()], "set_mean": [mean.as_hook()]},
        head=session.head,
        batch_size=options.batch_size,
        resume=None
        if pieces is None
        else Resume(pieces, {"evaluation": "massive_reset", "block": block}, [zero, mean]),
    )
    table["replaced"] = [0, zero.counts["replaced"], mean.counts["replaced"]]
    table["unmatched"] = [0, 0, mean.counts["unmatched"]]
    massive = stats.massive[stats.massive["site"] == site]
    lines = [
        f"massive reset at block {block} output ({site}); means over {n_ref} reference images, "
        f"{len(evaluated)} evaluated",
        "  massive entries (reference): "
        + ", ".join(
            f"{r.role} d{r.dim} {r.mean_value:.1f} (n={r.count})"
            for r in massive.sort_values("count", ascending=False).head(6).itertuples()
        ),
    ]
    for r in table.itertuples():
        extra = f", top-1 {r.top1:.2f}, agreement {r.agreement:.1f}%" if session.head is not None else ""
        lines.append(
            f"  {r.condition:<9} cos_cls {r.cos_cls:.5f}  cos_patch {r.cos_patch:.5f}{extra}  (replaced {r.replaced})"
        )
    lines.append(f"  cos_cls: {DEFINITIONS['cos_cls']}; cos_patch: {DEFINITIONS['cos_patch']}")
    columns = ["top1", "agreement"] if session.head is not None else ["cos_cls", "cos_patch"]
    return ExperimentResult(
        tables={"massive_reset": table, "means": means.table(), "reference_massive": massive},
        figures={
            "massive_reset": condition_bars(
                table, columns, f"set_zero / set_mean at block {block}: {session.entry.name}"
            )
        },
        summary={
            "block": block,
            "site": site,
            "means": means.describe(),
            "table": table.to_dict("records"),
            "definitions": DEFINITIONS,
        },
        lines=lines,
    )
