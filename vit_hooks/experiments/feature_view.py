"""Experiment 1: |a| of one block's output over (token, dim) for one image, tokens labelled by role
(CLS, registers, the first patches), and the massive dims over the patch grid as image-shaped heatmaps.

Massive entries are detected by the criterion over the whole hidden state of that image and block
(all tokens x dims). When there are none, the heatmaps show the dims of the largest |a| instead, and
say so.
"""

from __future__ import annotations

import pandas as pd
import torch

from mech_interp.core.criterion import massive_mask, median_abs
from mech_interp.runs.experiment import ExperimentResult
from mech_interp.validation.errors import UsageError
from mech_interp.viz.feature_view import feature_view_3d

from .. import hook_names
from ..configs import FeatureViewConfig
from ..figures import patch_grid_heatmaps
from ..session import Session


def run(session: Session, config: FeatureViewConfig) -> ExperimentResult:
    hooked, roles, options = session.hooked, session.hooked.roles, session.options
    if config.image >= len(session.images):
        raise UsageError(f"--image {config.image} is out of range: the folder has images 0..{len(session.images) - 1}")
    if config.block is not None and config.block >= hooked.n_blocks:
        raise UsageError(
            f"--block {config.block} is out of range: the model has blocks 0..{hooked.n_blocks - 1} (0-based)"
        )
    item = session.images.items[config.image]
    image = session.images.load(config.image, session.vit.preprocessing.eval)[None]
    names = [hook_names.resid_post(b) for b in range(hooked.n_blocks)]
    _, cache = hooked.run_with_cache(image, names)
    cache = {name: acts.cpu() for name, acts in cache.items()}
    tops = [float(cache[n].abs().max()) for n in names]
    block = config.block if config.block is not None else int(torch.tensor(tops).argmax())
    acts = cache[hook_names.resid_post(block)]  # [1, token, d_model]
    median = float(median_abs(acts)[0])
    mask = massive_mask(acts, options.criterion)[0]

    n_shown = min(roles.n_tokens, roles.n_prefix + config.n_patches)
    shown = acts[0, :n_shown]
    d_model = shown.shape[1]
    grid = pd.DataFrame(
        {
            "position": torch.arange(n_shown).repeat_interleave(d_model).numpy(),
            "dim": torch.arange(d_model).repeat(n_shown).numpy(),
            "value": shown.flatten().numpy(),
        }
    )
    grid["abs"] = grid["value"].abs()
    grid["token"] = grid["position"].map(roles.name)

    pos, dim = mask.nonzero(as_tuple=True)
    massive = roles.annotate(
        pd.DataFrame({"position": pos.numpy(), "dim": dim.numpy(), "value": acts[0, pos, dim].numpy()})
    )
    massive["abs"] = massive["value"].abs()
    if massive.empty:
        flat = acts[0].abs().flatten()
        order = flat.argsort(descending=True)
        dims = list(dict.fromkeys(int(i) % d_model for i in order[:50]))[:3]
        dims_kind = "largest |a| (no massive entry)"
    else:
        dims = sorted(massive["dim"].unique().tolist())[:6]
        dims_kind = "massive"
    patches = acts[0, roles.patches]  # [grid_h * grid_w, d_model]
    rows, cols = roles.grid
    patch_grid = pd.DataFrame(
        [
            {"dim": d, "row": p // cols, "col": p % cols, "value": float(patches[p, d])}
            for d in dims
            for p in range(rows * cols)
        ]
    )
    top = acts[0].abs().flatten().argmax()
    top_pos, top_dim = divmod(int(top), d_model)

    where = f"{session.entry.name}, block {block} output, image {item.path.name}"
    lines = [
        f"feature view, block {block} (blocks.{block}.hook_resid_post) of {item.path.name}: "
        f"median |a| {median:.3g} (lower median over tokens x dims), max |a| {tops[block]:.4g} at "
        f"{roles.name(top_pos)} dim {top_dim} ({tops[block] / median:.0f}x the median)"
    ]
    if massive.empty:
        lines.append(
            f"  no massive entry (|a| > {options.min_abs:g} and >= {options.min_ratio:g}x median); "
            f"heatmaps show the dims of the largest |a|: {dims}"
        )
    else:
        for r in massive.sort_values("abs", ascending=False).head(8).itertuples():
            lines.append(f"  massive: {r.role} dim {r.dim} value {r.value:.1f}")
    massive_marks = (
        massive[["position", "dim", "abs"]] if not massive.empty else pd.DataFrame(columns=["position", "dim", "abs"])
    )
    return ExperimentResult(
        tables={
            "activations": grid,
            "massive_entries": massive,
            "patch_grid": patch_grid,
            "block_max": pd.DataFrame({"layer": range(len(tops)), "max_abs": tops}),
        },
        figures={
            "feature_view_3d": feature_view_3d(grid, massive_marks, f"|a| over (token, dim): {where}"),
            "patch_grid": patch_grid_heatmaps(patch_grid, f"patch grid of the {dims_kind} dims: {where}"),
        },
        summary={
            "block": block,
            "image": str(item.path.name),
            "median_abs": median,
            "max_abs": tops[block],
            "top_entry": {"role": roles.name(top_pos), "dim": top_dim},
            "heatmap_dims": dims,
            "heatmap_dims_kind": dims_kind,
            "massive": massive[["role", "dim", "value"]].to_dict("records"),
        },
        lines=lines,
    )
