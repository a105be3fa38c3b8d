"""Experiment 4: Fix-Reg-Mean against the original model (upstream README's table).

With a linear head (``--head``): ImageNet-1k top-1 of both, and how often their predictions agree.
Without one, or in addition: how much the final CLS and patch features move (cosine similarity to the
original's), a label-free measure. The means are upstream's file for a DINOv2-reg model (``auto``),
a file, or measured here over ``--means-images`` (default: the evaluated images, augmented).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mech_interp.runs.experiment import ExperimentResult
from mech_interp.validation.errors import NothingToMeasure, UsageError

from ..configs import FixRegMeanConfig
from ..evaluation import DEFINITIONS, Resume, compare_conditions
from ..figures import condition_bars
from ..fix_reg_mean import FixRegMean
from ..images import open_images
from ..register_means import UPSTREAM_FILES, RegisterMeans, measure
from ..session import Session


def resolve_means(session: Session, config: FixRegMeanConfig) -> RegisterMeans:
    entry, spec = session.entry, config.means
    if spec == "auto":
        spec = f"upstream:{entry.upstream_means.split('_')[0]}" if entry.upstream_means else "measure"
    if spec.startswith("upstream:"):
        means = RegisterMeans.upstream(spec.split(":", 1)[1])
    elif spec == "measure":
        images = open_images(config.means_images) if config.means_images else session.images
        means = measure(
            session.hooked,
            images,
            session.vit.preprocessing,
            augment=True,
            seed=session.options.seed,
            batch_size=session.options.batch_size,
        )
        means.source = f"measured over {len(images)} images of {images.root} (augmented, seed {session.options.seed})"
    elif spec.endswith(".pt"):
        means = RegisterMeans.load(spec)
    else:
        raise UsageError(
            f"--means {config.means!r} is not allowed: expected auto, measure, upstream:SIZE "
            f"({', '.join(UPSTREAM_FILES)}) or a .pt file"
        )
    means.check_fits(session.hooked.n_blocks, entry.n_registers, entry.d_model)
    return means


def run(session: Session, config: FixRegMeanConfig, pieces: Any = None) -> ExperimentResult:
    if session.entry.n_registers == 0:
        raise NothingToMeasure(
            f"{session.entry.name} has no register tokens: Fix-Reg-Mean does not apply "
            "(use a DINOv2-reg model, e.g. random:vit-tiny-reg4 or vit_small_patch14_reg4_dinov2)"
        )
    means = resolve_means(session, config)
    fix = FixRegMean(means)
    table = compare_conditions(
        session.hooked,
        session.images,
        session.vit.preprocessing.eval,
        {"fix_reg_mean": fix.hooks()},
        head=session.head,
        batch_size=session.options.batch_size,
        resume=None if pieces is None else Resume(pieces, {"evaluation": "fix_reg_mean"}, list(fix.blocks)),
    )
    name = session.entry.name
    orig, fixed = table.iloc[0], table.iloc[1]
    lines = [
        f"Fix-Reg-Mean on {name}: registers overwritten before each of {means.n_blocks} blocks with {means.source}",
        f"  {len(session.images)} images; {fix.replaced} register entries written",
    ]
    if session.head is not None:
        lines += [
            "  | model | original top-1 | Fix-Reg-Mean top-1 | agreement |",
            "  |---|---:|---:|---:|",
            f"  | {name} | {orig.top1:.2f} | {fixed.top1:.2f} | {fixed.agreement:.1f}% |",
            f"  top-1 over {int(orig.n_labelled)} labelled images: {DEFINITIONS['top1']}",
        ]
    lines += [
        f"  feature change: cos_cls {fixed.cos_cls:.5f}, cos_patch {fixed.cos_patch:.5f}",
        f"  cos_cls: {DEFINITIONS['cos_cls']}; cos_patch: {DEFINITIONS['cos_patch']}",
    ]
    columns = ["top1", "agreement"] if session.head is not None else ["cos_cls", "cos_patch"]
    return ExperimentResult(
        tables={
            "fix_reg_mean": table,
            "definitions": pd.DataFrame(list(DEFINITIONS.items()), columns=["measure", "definition"]),
        },
        figures={"fix_reg_mean": condition_bars(table, columns, f"Fix-Reg-Mean vs original: {name}")},
        summary={
            "means_source": means.source,
            "replaced": fix.replaced,
            "table": table.to_dict("records"),
            "definitions": DEFINITIONS,
        },
        lines=lines,
    )
