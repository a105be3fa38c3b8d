"""Options shared by every vision run and one config per experiment: their fields are the CLI flags
(``vit-hooks <experiment> --help``) and the keys of a run's identity. Imports no torch.

Blocks are 0-based timm blocks everywhere: "block L" is ``blocks.L``, whose output is
``blocks.L.hook_resid_post`` (= timm ``forward_intermediates`` index L) and whose input is
``blocks.L.hook_resid_pre``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mech_interp.validation.checks import require_at_least, require_criterion, require_seed, require_type
from mech_interp.validation.device_names import check_device
from mech_interp.validation.errors import UsageError

from .registry import DEFAULT_MODEL

BLOCK_CONVENTION = (
    "0-based timm blocks; 'block L' output = blocks.L.hook_resid_post (forward_intermediates index L), "
    "its input = blocks.L.hook_resid_pre"
)
TOKEN_CONVENTION = "tokens ordered [CLS, registers 0..R-1, patches row by row]; roles cls, regR, patch(row,col)"


VIT_DEVICES = ("cpu", "cuda", "cuda:N")
UPSTREAM_SIZES = ("small", "base", "large", "giant")  # upstream's register-mean files, one per DINOv2-reg size


@dataclass
class ViTOptions:
    """Which model, which images, the criterion: shared by every vision experiment."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "registered name, ARCH@CHECKPOINT or timm model name"})
    img_size: int | None = field(default=None, metadata={"help": "input size in pixels (default: the model's)"})
    images: str = field(
        default="samples",
        metadata={"help": "image folder (ImageFolder or flat); 'samples' = imagenet-samples under ../shared/data"},
    )
    n_images: int | None = field(default=None, metadata={"help": "use the first N images (sorted by path)"})
    batch_size: int = field(default=16, metadata={"help": "images per forward"})
    min_abs: float = field(default=100.0, metadata={"help": "massive: |a| above this"})
    min_ratio: float = field(
        default=1000.0,
        metadata={
            "help": "massive: |a| at least this many times the median |a| of "
            "its hidden state (one image, all tokens x dims)"
        },
    )
    head: str | None = field(
        default=None, metadata={"help": "DINOv2 linear head checkpoint (weight [1000, 2 x d_model])"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the augmentation draws (register means)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        for name in ("model", "images", "device"):
            require_type(self, name, str, "a string")
        require_type(self, "head", (str, type(None)), "a file name")
        require_at_least(self, 1, "n_images", "batch_size")
        if self.img_size is not None:
            require_at_least(self, 1, "img_size")
        require_criterion(self)
        require_seed(self)
        check_device(self.device, VIT_DEVICES)

    @property
    def criterion(self):
        from mech_interp.core.criterion import MassiveCriterion

        return MassiveCriterion(float(self.min_abs), float(self.min_ratio))


def _block(config: object) -> None:
    if getattr(config, "block") is not None:
        require_at_least(config, 0, "block")


@dataclass
class FeatureViewConfig:
    """Experiment 1: |a| of one block's output over (token, dim) for one image; the patch grid of the massive dims."""

    block: int | None = field(
        default=None,
        metadata={"help": "block (0-based; default: the block whose output holds the image's largest |a|)"},
    )
    image: int = field(default=0, metadata={"help": "index of the image in the folder (sorted by path)"})
    n_patches: int = field(default=8, metadata={"help": "patch tokens shown after CLS and the registers"})

    def __post_init__(self) -> None:
        _block(self)
        require_at_least(self, 0, "image")
        require_at_least(self, 1, "n_patches")


@dataclass
class LayerwiseConfig:
    """Experiment 2: per block, top-1/2/3 and median |a| over the images, and per token role."""

    k: int = field(default=3, metadata={"help": "top-k entries per image and block"})

    def __post_init__(self) -> None:
        require_at_least(self, 1, "k")


@dataclass
class RegisterMeansConfig:
    """Experiment 3: mean register features at every block's input over the images (augmented)."""

    augment: bool = field(
        default=True, metadata={"help": "random resized crop + flip (the upstream files' 'trainaug')"}
    )

    def __post_init__(self) -> None:
        require_type(self, "augment", bool, "true or false")


@dataclass
class UpstreamMeansConfig:
    """Experiment 3 (files): upstream's DINOv2-reg register means, loaded on the CPU and summarised (no model)."""

    sizes: list[str] = field(
        default_factory=lambda: list(UPSTREAM_SIZES), metadata={"help": "model sizes: small, base, large, giant"}
    )

    def __post_init__(self) -> None:
        if (
            not isinstance(self.sizes, list)
            or not self.sizes
            or any(s not in UPSTREAM_SIZES for s in self.sizes)
            or len(set(self.sizes)) != len(self.sizes)
        ):
            shown = ",".join(map(str, self.sizes)) if isinstance(self.sizes, list) else self.sizes
            raise UsageError(
                f"--sizes {shown!r} is not allowed: expected distinct sizes among {', '.join(UPSTREAM_SIZES)}"
            )


@dataclass
class FixRegMeanConfig:
    """Experiment 4: Fix-Reg-Mean against the original: top-1 with a linear head, feature cosine without."""

    means: str = field(
        default="auto",
        metadata={
            "help": "auto (upstream file for DINOv2-reg models, else measured), upstream:SIZE, measure, or a .pt file"
        },
    )
    means_images: str | None = field(
        default=None,
        metadata={"help": "image folder the measured means come from (default: the evaluated images, augmented)"},
    )

    def __post_init__(self) -> None:
        require_type(self, "means", str, "auto, measure, upstream:SIZE or a .pt file")
        require_type(self, "means_images", (str, type(None)), "a directory")


@dataclass
class MassiveResetConfig:
    """Experiment 5a: set_zero / set_mean on the massive activations of one block's output."""

    block: int | None = field(
        default=None,
        metadata={
            "help": "block (0-based; default: the first whose output has "
            "massive activations in >= half the reference images)"
        },
    )
    n_ref: int | None = field(
        default=None,
        metadata={"help": "first N images give the means and the block; the rest are evaluated (default: half)"},
    )

    def __post_init__(self) -> None:
        _block(self)
        require_at_least(self, 1, "n_ref")


@dataclass
class AttentionConfig:
    """Experiment 5b: per block and head, attention paid to CLS, each register, the massive and the top-norm tokens."""
