"""Image folders: ImageFolder layout (one sub-directory per class) or a flat folder whose file names
start with the class's WordNet id (``n01440764_tench.JPEG``, as ``../shared/data/imagenet-samples``).

An image's ImageNet-1k class index is the position of its WordNet id in timm's ImageNet synset list
(the sorted 1000 ids, the order every ImageNet-1k head uses); images without a known id get -1 and
count only in label-free measures.

Opening a folder checks, before any model loads, every entry named like an image (a broken link or a
FIFO is refused, not skipped) and the header of every image the run will read (``image_file``); a
file whose pixels turn out truncated is refused when it is decoded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from jaxtyping import Float, Int
from PIL import Image

from mech_interp.data.locations import find_data
from mech_interp.validation.errors import UsageError

from .image_file import check_image, read_rgb

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
        return transform(read_rgb(self.items[index].path))

    def batches(
        self, batch_size: int, transform: Callable[[Image.Image], torch.Tensor]
    ) -> Iterator[tuple[Float[torch.Tensor, "batch 3 height width"], Int[torch.Tensor, "batch"]]]:
        for start in range(0, len(self.items), batch_size):
            chunk = self.items[start : start + batch_size]
            yield (torch.stack([transform(read_rgb(i.path)) for i in chunk]), torch.tensor([i.label for i in chunk]))


def _image_files(root: Path, paths: Iterable[Path]) -> list[Path]:
    """The entries of ``paths`` named like images; refused in one line when one is a broken link or not a
    regular file: skipping it would compute on fewer images than the folder lists, and shift which are
    the first N."""
    listed = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]
    bad = [p for p in listed if not p.is_file()]
    if bad:
        what = f"a broken symbolic link (to {os.readlink(bad[0])!r})" if bad[0].is_symlink() else "not a regular file"
        more = f" (and {len(bad) - 1} more entries like it)" if len(bad) > 1 else ""
        raise UsageError(
            f"--images {str(root)!r}: {str(bad[0])!r} is {what}{more}: expected image files; fix or remove it"
        )
    return listed


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
    entries = sorted(root.iterdir())
    subdirs = [d for d in entries if d.is_dir()]
    files = _image_files(root, entries)
    if subdirs and not files:
        items = [
            ImageItem(p, d.name, index.get(d.name, -1))
            for d in subdirs
            for p in _image_files(root, sorted(d.rglob("*")))
        ]
        layout = "imagefolder"
    else:
        items = [ImageItem(p, p.stem, index.get(m.group(1), -1) if (m := _WNID.match(p.name)) else -1) for p in files]
        layout = "flat"
    if not items:
        raise UsageError(f"--images {str(root)!r} holds no images (accepted: {', '.join(IMAGE_SUFFIXES)})")
    images = ImageSet(root, layout, tuple(items)).head(n_images)
    for item in images.items:  # before any model loads: unreadable, too large, a mode without RGB
        check_image(item.path)
    return images
