"""Experiment 3: mean register features at the input of every block over an image folder, with the
augmentation of ``preprocessing.AUGMENTATION`` (seeded), saved in upstream's format (``register_means.pt``)
so that ``fix-reg-mean --means`` takes it as it takes upstream's files."""

from __future__ import annotations

from mech_interp.runs.experiment import ExperimentResult

from ..configs import RegisterMeansConfig
from ..figures import register_mean_lines
from ..preprocessing import AUGMENTATION
from ..register_means import RegisterMeans, measure
from ..session import Session


def largest_entries(means: RegisterMeans, n: int = 3) -> list[tuple[int, int]]:
    """The (register, dim) pairs with the largest |mean| at the last block."""
    last = means.means[means.n_blocks - 1].abs()
    order = last.flatten().argsort(descending=True)[:n]
    return [divmod(int(i), last.shape[1]) for i in order]


def describe(means: RegisterMeans, title: str) -> tuple[list[str], dict]:
    summary = means.summary()
    lines = [
        f"{title}: {means.n_blocks} blocks x {list(means.shape)} (block = its input, blocks.L.hook_resid_pre)",
        "  block  largest |mean| (register, dim)   median |mean|",
    ]
    n = len(summary)
    shown = set(range(n)) if n <= 12 else {0, 1, n - 1, *range(0, n, 4)}  # the full table is saved
    lines += [
        f"  {r.block:>5}  {r.value:>10.2f} (reg {r.register}, dim {r.dim})   {r.median_abs:.3f}"
        for r in summary.itertuples()
        if r.block in shown
    ]
    return lines, {"per_block": summary.to_dict("records")}


def run(session: Session, config: RegisterMeansConfig) -> ExperimentResult:
    means = measure(
        session.hooked,
        session.images,
        session.vit.preprocessing,
        augment=config.augment,
        seed=session.options.seed,
        batch_size=session.options.batch_size,
    )
    reg_token = session.vit.model.reg_token[0].float().cpu()
    block0 = float((means.means[0] - reg_token).abs().max())  # block 0's input registers are the parameters themselves
    aug = f"augmented ({AUGMENTATION}, seed {session.options.seed})" if config.augment else "not augmented"
    lines, summary = describe(means, f"register means over {means.n_images} images, {aug}")
    lines.append(
        f"  check: block-0 means - model.reg_token: max |difference| {block0:.2e} (the learned register tokens)"
    )
    table = means.table()
    return ExperimentResult(
        tables={"register_means": table, "register_means_summary": means.summary()},
        figures={
            "register_means": register_mean_lines(
                table, largest_entries(means), f"mean register features: {session.entry.name}"
            )
        },
        summary={
            **summary,
            "n_images": means.n_images,
            "augmentation": AUGMENTATION if config.augment else None,
            "block0_minus_reg_token": block0,
            "file": "register_means.pt",
        },
        lines=lines,
        files={"register_means.pt": means.save},
    )
