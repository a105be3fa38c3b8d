"""What every vision experiment works on: the loaded model with its hooks, the images, the options
and the linear head when one is given. Built once per command (a study shares one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .configs import ViTOptions
from .hooks import HookedViT
from .images import ImageSet, open_images
from .loading import LoadedViT, load_vit
from .registry import ModelEntry, parse_model


@dataclass
class Session:
    options: ViTOptions
    entry: ModelEntry
    vit: LoadedViT
    hooked: HookedViT
    images: ImageSet
    head: torch.nn.Linear | None

    @classmethod
    def open(cls, options: ViTOptions, entry: ModelEntry | None = None) -> "Session":
        """Everything checked first (model spec, images, head file), then the model is built. ``entry``: the model
        as the engine resolved it (parsed once per command); parsed from the options when not given."""
        from .linear_head import load_linear_head

        entry = entry if entry is not None else parse_model(options.model, options.img_size)
        images = open_images(options.images, options.n_images)
        head = load_linear_head(options.head, entry.d_model) if options.head else None
        vit = load_vit(entry, device=options.device)
        return cls(options, entry, vit, HookedViT(vit.model, entry.img_size), images, head)

    def model_info(self) -> dict[str, Any]:
        e = self.entry
        return {
            "name": e.name,
            "source": self.vit.source,
            "arch": e.arch,
            "kind": e.kind,
            "n_blocks": e.n_blocks,
            "d_model": e.d_model,
            "n_heads": e.n_heads,
            "n_registers": e.n_registers,
            "patch_size": e.patch_size,
            "img_size": e.img_size,
            "grid": list(self.hooked.roles.grid),
            "description": e.description,
            "n_params": sum(p.numel() for p in self.vit.model.parameters()),
        }
