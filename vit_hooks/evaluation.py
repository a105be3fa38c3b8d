"""What an intervention does to the model's output, with and without labels.

For each condition (a list of hooks) and image, against the unmodified model on the same image:

- ``cos_cls``: cosine similarity of the final CLS features (after the final LayerNorm);
- ``cos_patch``: mean over patch tokens of the cosine similarity of each patch's final features
  (registers excluded);
- with a linear head: ``top1`` (ImageNet-1k accuracy over the labelled images, in %) and
  ``agreement`` (share of images whose predicted class is the unmodified model's prediction, in %).

One forward of the unmodified model per batch serves every condition. With a ``Resume``, the running
sums (and the interventions' counts) are saved every few batches as a piece of the run directory, and
a rerun after a kill or Ctrl-C starts after the last saved image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from .hooks import HookedViT
from .images import ImageSet
from .linear_head import head_features

Hooks = Sequence[tuple[str, Callable[[torch.Tensor, Any], torch.Tensor]]]

DEFINITIONS = {
    "cos_cls": "mean over images of cos(final CLS features, unmodified model's)",
    "cos_patch": "mean over images and patch tokens of cos(final patch features, unmodified model's)",
    "top1": "ImageNet-1k top-1 of the linear head on concat[CLS, mean patch] over the labelled images, %",
    "agreement": "share of images whose predicted class equals the unmodified model's prediction, %",
}


@dataclass
class Resume:
    """Where an evaluation keeps its progress: ``pieces`` has ``load_piece(key)`` / ``save_piece(key,
    value)`` (a ``RunWriter``); ``counters`` are interventions whose ``counts`` are saved with it."""

    pieces: Any
    key: dict[str, Any]
    counters: Sequence[Any] = ()
    every: int = 10  # batches between saves


def _cosines(
    a: Float[torch.Tensor, "batch token d_model"], b: Float[torch.Tensor, "batch token d_model"], hooked: HookedViT
) -> tuple[Float[torch.Tensor, "batch"], Float[torch.Tensor, "batch"]]:
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)  # [batch, token]
    return cos[:, 0], cos[:, hooked.roles.patches].mean(1)


def compare_conditions(
    hooked: HookedViT,
    images: ImageSet,
    transform: Callable,
    conditions: dict[str, Hooks],
    head: torch.nn.Linear | None = None,
    batch_size: int = 16,
    resume: Resume | None = None,
) -> pd.DataFrame:
    """One row per condition (``original`` first): the measures above, and how many images they cover."""
    sums: dict[str, dict[str, float]] = {
        c: {"cos_cls": 0.0, "cos_patch": 0.0, "correct": 0, "agree": 0} for c in ["original", *conditions]
    }
    n_images = n_labelled = 0
    saved = resume.pieces.load_piece(resume.key) if resume is not None else None
    if saved is not None:
        sums, n_images, n_labelled = saved["sums"], saved["n_images"], saved["n_labelled"]
        for counter, counts in zip(resume.counters, saved["counts"]):
            counter.counts.update(counts)
        tqdm.write(f"resuming after {n_images} of {len(images)} images (progress saved by an interrupted run)")
    todo = ImageSet(images.root, images.layout, images.items[n_images:])
    for i, (batch, labels) in enumerate(
        tqdm(
            todo.batches(batch_size, transform),
            total=-(-len(todo) // batch_size),
            desc="conditions",
            unit="batch",
            leave=False,
        )
    ):
        reference = hooked(batch).cpu()
        with torch.inference_mode():
            ref_pred = head(head_features(reference, hooked.roles)).argmax(1) if head is not None else None
        labelled = labels >= 0
        n_images += len(batch)
        n_labelled += int(labelled.sum())
        for name in sums:
            if name == "original":
                out = reference
            else:
                with hooked.hooks(conditions[name]):
                    out = hooked(batch).cpu()
            cls, patch = _cosines(out, reference, hooked)
            sums[name]["cos_cls"] += float(cls.sum())
            sums[name]["cos_patch"] += float(patch.sum())
            if head is not None:
                with torch.inference_mode():
                    pred = head(head_features(out, hooked.roles)).argmax(1)
                sums[name]["correct"] += int((pred == labels)[labelled].sum())
                sums[name]["agree"] += int((pred == ref_pred).sum())
        if resume is not None and (i + 1) % resume.every == 0:
            resume.pieces.save_piece(
                resume.key,
                {
                    "sums": sums,
                    "n_images": n_images,
                    "n_labelled": n_labelled,
                    "counts": [dict(c.counts) for c in resume.counters],
                },
            )
    rows = []
    for name, s in sums.items():
        row = {
            "condition": name,
            "n_images": n_images,
            "cos_cls": s["cos_cls"] / n_images,
            "cos_patch": s["cos_patch"] / n_images,
        }
        if head is not None:
            row.update(
                {
                    "n_labelled": n_labelled,
                    "top1": 100 * s["correct"] / n_labelled if n_labelled else float("nan"),
                    "agreement": 100 * s["agree"] / n_images,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)
