"""Image preprocessing, stated exactly: evaluation (resize + center crop) and the training
augmentation the register means are measured with.

Evaluation is DINOv2's linear-evaluation transform: resize the shorter side to
``img_size / crop_pct`` (bicubic), center-crop ``img_size``, scale to [0, 1], normalize with the
ImageNet mean and std. ``crop_pct`` is 224 / 256 (0.875) for the embedded and test models and for
DINOv2 models fed <= 256 px (DINOv2's linear evaluation); other models take their timm
``pretrained_cfg`` (crop_pct, mean, std: CLIP's differ), e.g. 1.0 for the DINOv2-reg models at 518 px.
Augmentation (register means): ``RandomResizedCrop(img_size, scale=(0.08, 1), ratio=(3/4, 4/3))``
(bicubic) and a horizontal flip with probability 0.5, drawn from a seeded generator, then the same
normalization. Written with PIL and torch so that every number it uses is here and in the manifest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_EVAL_CROP = 224 / 256  # DINOv2's linear evaluation: resize 256, center crop 224
AUGMENTATION = {
    "random_resized_crop_scale": (0.08, 1.0),
    "ratio": (3 / 4, 4 / 3),
    "hflip_p": 0.5,
    "interpolation": "bicubic",
}


@dataclass(frozen=True)
class Preprocessing:
    img_size: int
    crop_pct: float
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    @classmethod
    def for_model(cls, entry: Any, model: Any = None) -> "Preprocessing":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.get("std", IMAGENET_STD))
        dinov2_eval = entry.kind in ("embedded", "random", "planted") or (
            "dinov2" in entry.arch and entry.img_size <= 256
        )
        crop_pct = DINOV2_EVAL_CROP if dinov2_eval else float(cfg.get("crop_pct", DINOV2_EVAL_CROP))
        return cls(entry.img_size, crop_pct, mean, std)

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "eval": f"resize shorter side to round(img_size / crop_pct) ({self.resize_to}), "
            f"center crop {self.img_size}, /255, normalize (mean, std)",
        }

    @property
    def resize_to(self) -> int:
        return int(math.floor(self.img_size / self.crop_pct))

    def _normalize(self, img: Image.Image) -> Float[torch.Tensor, "3 height width"]:
        array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        t = torch.from_numpy(array).permute(2, 0, 1)
        return (t - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]

    def eval(self, img: Image.Image) -> Float[torch.Tensor, "3 height width"]:
        img = img.convert("RGB")
        w, h = img.size
        scale = self.resize_to / min(w, h)
        img = img.resize((max(self.img_size, round(w * scale)), max(self.img_size, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - self.img_size) // 2, (h - self.img_size) // 2
        return self._normalize(img.crop((left, top, left + self.img_size, top + self.img_size)))

    def augment(self, img: Image.Image, generator: torch.Generator) -> Float[torch.Tensor, "3 height width"]:
        img = img.convert("RGB")
        w, h = img.size
        box = _random_resized_crop_box(w, h, generator)
        img = img.resize((self.img_size, self.img_size), Image.BICUBIC, box=box)
        if torch.rand((), generator=generator) < AUGMENTATION["hflip_p"]:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return self._normalize(img)


def _random_resized_crop_box(w: int, h: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawn from ``generator``."""
    area = w * h
    lo, hi = AUGMENTATION["random_resized_crop_scale"]
    log_ratio = (math.log(AUGMENTATION["ratio"][0]), math.log(AUGMENTATION["ratio"][1]))
    for _ in range(10):
        target = area * float(torch.empty(()).uniform_(lo, hi, generator=generator))
        aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio, generator=generator)))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (), generator=generator))
            return left, top, left + cw, top + ch
    side = min(w, h)  # fallback: the central square, as torchvision does for extreme aspect ratios
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side
