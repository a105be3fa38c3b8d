"""Image folders: ImageFolder layout (one sub-directory per class) or a flat folder whose file names
start with the class's WordNet id (``n01440764_tench.JPEG``, as ``../shared/data/imagenet-samples``).

An image's ImageNet-1k class index is the position of its WordNet id in timm's ImageNet synset list
(the sorted 1000 ids, the order every ImageNet-1k head uses); images without a known id get -1 and
count only in label-free measures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from jaxtyping import Float, Int
from PIL import Image, UnidentifiedImageError

from mech_interp.data.locations import find_data
from mech_interp.errors import UsageError

SAMPLES = "imagenet-samples"  # the default folder, found with mech_interp.data.locations.find_data
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp")
_WNID = re.compile(r"^(n\d{8})")


@dataclass(frozen=True)
class ImageItem:
    path: Path
    class_name: str  # the sub-directory, or the file name's stem
    label: int  # ImageNet-1k index, -1 when unknown


@dataclass(frozen=True)
class ImageSet:
    root: Path
    layout: str  # imagefolder | flat
    items: tuple[ImageItem, ...]

    def __len__(self) -> int:
        return len(self.items)

    def head(self, n: int | None) -> "ImageSet":
        return self if n is None or n >= len(self.items) else ImageSet(self.root, self.layout, self.items[:n])

    def describe(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "n_images": len(self.items),
            "n_labelled": sum(i.label >= 0 for i in self.items),
        }

    def load(
        self, index: int, transform: Callable[[Image.Image], torch.Tensor]
    ) -> Float[torch.Tensor, "3 height width"]:
        return transform(_open(self.items[index].path))

    def batches(
        self, batch_size: int, transform: Callable[[Image.Image], torch.Tensor]
    ) -> Iterator[tuple[Float[torch.Tensor, "batch 3 height width"], Int[torch.Tensor, "batch"]]]:
        for start in range(0, len(self.items), batch_size):
            chunk = self.items[start : start + batch_size]
            yield (torch.stack([transform(_open(i.path)) for i in chunk]), torch.tensor([i.label for i in chunk]))


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"cannot read image {str(path)!r}: {err}") from None


def _imagenet_index() -> dict[str, int]:
    from timm.data import ImageNetInfo

    return {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}


def open_images(folder: str | Path | None = None, n_images: int | None = None) -> ImageSet:
    """The images of ``folder`` (default: ``imagenet-samples`` under the data directories), sorted by
    path; refused in one line when absent, empty or not a directory."""
    if folder is None or str(folder) == "samples":
        found = find_data(SAMPLES)
        if found is None:
            raise UsageError(
                f"the default image folder {SAMPLES!r} is absent: put ../shared/data beside the checkout "
                "(or set MECH_INTERP_DATA), or pass --images DIR (ImageFolder or flat folder of images)"
            )
        root = found
    else:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise UsageError(
                f"--images {str(folder)!r} {'is a file' if root.exists() else 'does not exist'}: expected a "
                "directory of images (ImageFolder layout, or flat with class ids in the file names)"
            )
    if n_images is not None and (not isinstance(n_images, int) or isinstance(n_images, bool) or n_images < 1):
        raise UsageError(f"--n-images {n_images!r} is not allowed: expected an integer >= 1")
    index = _imagenet_index()
    subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if subdirs and not files:
        items = [
            ImageItem(p, d.name, index.get(d.name, -1))
            for d in subdirs
            for p in sorted(d.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        layout = "imagefolder"
    else:
        items = [ImageItem(p, p.stem, index.get(m.group(1), -1) if (m := _WNID.match(p.name)) else -1) for p in files]
        layout = "flat"
    if not items:
        raise UsageError(f"--images {str(root)!r} holds no images (accepted: {', '.join(IMAGE_SUFFIXES)})")
    return ImageSet(root, layout, tuple(items)).head(n_images)
