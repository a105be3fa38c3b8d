"""Experiment 2: per block, top-1/2/3 and median |a| of the output over the images (paper Fig. 2's
ViT panel), the massive entries by role, and per token role (CLS, registers, patches) the largest
|a| and the largest token norm (the high-norm "artifact" tokens of Darcet et al.)."""

from __future__ import annotations

from typing import Callable

import pandas as pd
import torch
from jaxtyping import Float

from mech_interp.core.layer_stats import SUMMARY_DEFINITIONS
from mech_interp.runs.experiment import ExperimentResult
from mech_interp.viz.layerwise import layerwise_lines

from .. import hook_names
from ..configs import LayerwiseConfig
from ..figures import role_lines
from ..hooks import HookedViT
from ..layer_stats import collect_layer_stats
from ..session import Session

ROLE_DEFINITIONS = {
    "max_abs": "mean over images of the largest |a| among that kind's tokens (all dims)",
    "max_norm": "mean over images of the largest L2 norm among that kind's tokens",
    "mean_norm": "mean over images and that kind's tokens of the L2 norm",
}


class RoleStats:
    """Per block and token kind (cls, register, patch): the ``ROLE_DEFINITIONS`` measures, folded in
    from the block outputs of a statistics pass."""

    def __init__(self, hooked: HookedViT) -> None:
        roles = hooked.roles
        kinds = {"cls": slice(0, 1), "register": roles.registers, "patch": roles.patches}
        self.kinds = {k: s for k, s in kinds.items() if s.stop > s.start}
        self.sums = torch.zeros(hooked.n_blocks, len(self.kinds), 3, dtype=torch.float64)
        self.n_images = 0
        self.n_blocks = hooked.n_blocks

    def fold(self, acts: Float[torch.Tensor, "batch token d_model"], hook) -> None:
        for i, s in enumerate(self.kinds.values()):
            part = acts[:, s].double()
            norms = part.norm(dim=-1)  # [batch, tokens of that kind]
            self.sums[hook.block, i] += torch.stack(
                [part.abs().flatten(1).max(1).values.sum(), norms.max(1).values.sum(), norms.mean(1).sum()]
            ).cpu()
        if hook.block == 0:
            self.n_images += acts.shape[0]

    def hooks(self) -> list[tuple[str, Callable]]:
        return [(hook_names.resid_post(b), self.fold) for b in range(self.n_blocks)]

    def table(self) -> pd.DataFrame:
        means = self.sums / self.n_images
        return pd.DataFrame(
            [
                {"layer": b, "kind": k, **dict(zip(ROLE_DEFINITIONS, means[b, i].tolist()))}
                for b in range(self.n_blocks)
                for i, k in enumerate(self.kinds)
            ]
        )


def run(session: Session, config: LayerwiseConfig) -> ExperimentResult:
    options = session.options
    role_stats = RoleStats(session.hooked)
    stats = collect_layer_stats(
        session.hooked,
        session.images,
        session.vit.preprocessing.eval,
        criterion=options.criterion,
        k=config.k,
        batch_size=options.batch_size,
        extra_hooks=role_stats.hooks(),
    )
    roles = role_stats.table()
    summary = stats.summary
    first = stats.first_massive_layer()
    name = session.entry.name
    lines = [
        f"layer-wise over {stats.n_sequences} images of {session.images.root.name}; first block with massive "
        f"activations (in >= half the images): {first if first is not None else 'none'}",
        "  topK, median: " + SUMMARY_DEFINITIONS["topK"].replace("sequence", "image") + "; lower median",
        "  ratio = mean top1 / mean median",
        "  block " + "".join(f"{c:>10}" for c in [f"top{i + 1}" for i in range(config.k)] + ["median", "ratio"]),
    ]
    for r in summary.itertuples():
        values = [getattr(r, f"top{i + 1}") for i in range(config.k)] + [r.median, r.ratio_of_means_top1_median]
        lines.append(f"  {r.layer:>5} " + "".join(f"{v:>10.3f}" for v in values))
    top = stats.top_entries.sort_values("abs", ascending=False).drop_duplicates(["layer"]).sort_values("layer")
    lines.append(
        "  largest entry per block: "
        + ", ".join(f"{r.layer}: {r.role} d{r.dim} {r.value:.1f}" for r in top.itertuples())
    )
    pivot = roles.pivot(index="layer", columns="kind", values="max_norm")
    lines.append(
        "  max token norm per kind (mean over images), last block: "
        + ", ".join(f"{k} {pivot[k].iloc[-1]:.1f}" for k in pivot.columns)
    )
    if not stats.massive.empty:
        counts = stats.massive.groupby(["role", "dim"])["count"].sum().sort_values(ascending=False).head(6)
        lines.append(
            "  massive (role, dim) by occurrences: " + ", ".join(f"({r}, {d}) x{c}" for (r, d), c in counts.items())
        )
    return ExperimentResult(
        tables={
            "layerwise": summary,
            "top_entries": stats.top_entries,
            "massive_entries": stats.massive,
            "by_role": roles,
        },
        figures={
            "layerwise": layerwise_lines(summary, f"layer-wise |a|: {name}, {stats.n_sequences} images"),
            "by_role": role_lines(roles, "max_norm", f"largest token norm per role: {name}", "L2 norm"),
        },
        summary={
            "first_massive_block": first,
            "n_images": stats.n_sequences,
            "top1": summary["top1"].tolist(),
            "median": summary["median"].tolist(),
            "definitions": {**SUMMARY_DEFINITIONS, **ROLE_DEFINITIONS},
        },
        lines=lines,
    )
