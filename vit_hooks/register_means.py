"""Per-block mean register features: measured over an image folder, or read from upstream's files.

Format (upstream ``assets/reg_feat_mean/*.pt``, and what ``RegisterMeans.save`` writes): a dict
``{block: FloatTensor[n_registers, d_model]}``, where entry ``block`` is the mean of the register
tokens at the INPUT of that block (``blocks.{block}.hook_resid_pre``): Fix-Reg-Mean writes it there
before the block runs. Block 0's input registers are the learned register tokens themselves (timm's
DINOv2-reg models add no position embedding to them), the same for every image: the upstream files'
block-0 entries are small (|x| < 0.54) like those parameters, and a measured block-0 mean equals
``model.reg_token`` exactly. Upstream's files were saved from a GPU; they are loaded with
``map_location="cpu"``. Upstream never released the script that computed them ("10k ImageNet train
images with augmentation"); ``measure`` is one, with the augmentation stated in ``preprocessing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from mech_interp.core.running_stats import Mean
from mech_interp.data.locations import find_data
from mech_interp.storage.tensor_files import load_tensors, require_real_finite
from mech_interp.storage.user_files import require_file
from mech_interp.validation.errors import NothingToMeasure, UsageError

from . import hook_names
from .configs import UPSTREAM_SIZES
from .hooks import HookedViT
from .images import ImageSet
from .preprocessing import Preprocessing

UPSTREAM_DIR = "dinov2-reg-feat-mean"
UPSTREAM_FILES = {size: f"{size}_imagemean_bs10k_trainaug.pt" for size in UPSTREAM_SIZES}
FORMAT = "a .pt file holding {block 0..N-1: FloatTensor[n_registers, d_model]}"


@dataclass
class RegisterMeans:
    means: dict[int, Float[torch.Tensor, "n_registers d_model"]]
    source: str
    n_images: int = 0

    @property
    def n_blocks(self) -> int:
        return len(self.means)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.means[0].shape)  # type: ignore[return-value]

    @classmethod
    def load(cls, path: str | Path) -> "RegisterMeans":
        """A ``{block: [n_registers, d_model]}`` file (upstream's, or one ``save`` wrote), on the CPU."""
        path = require_file(Path(path).expanduser(), "register-means file", FORMAT)
        raw = load_tensors(path, "register-means file", FORMAT)
        where = f"register-means file {str(path)!r}"
        if not isinstance(raw, dict) or not raw:
            raise UsageError(f"{where} holds {'an empty dict' if isinstance(raw, dict) else type(raw).__name__}: "
                             f"expected {FORMAT}")
        for key, value in raw.items():
            if not isinstance(key, int) or isinstance(key, bool):
                raise UsageError(f"{where} has the key {key!r} ({type(key).__name__}): expected the blocks "
                                 "0..N-1 as integer keys")
            if not isinstance(value, torch.Tensor):
                raise UsageError(f"{where} holds a {type(value).__name__} at block {key}: expected {FORMAT}")
            if value.layout != torch.strided or value.ndim != 2:
                shown = f"{value.ndim}-d" if value.layout == torch.strided else str(value.layout).removeprefix("torch.")
                raise UsageError(f"{where} holds a {shown} tensor at block {key}: expected {FORMAT}")
            require_real_finite(value, f"{where} at block {key}")
        blocks = sorted(raw)
        stray = next((b for b in blocks if not 0 <= b < len(blocks)), None)
        if stray is not None:
            raise UsageError(f"{where} has the key {stray} among {len(blocks)} blocks: expected the keys "
                             f"0..{len(blocks) - 1}")
        if len({tuple(v.shape) for v in raw.values()}) != 1:
            raise UsageError(f"{where} holds blocks of different shapes: expected {FORMAT}")
        return cls({b: raw[b].float().contiguous() for b in blocks}, f"file:{path}")

    @classmethod
    def upstream(cls, size: str) -> "RegisterMeans":
        """Upstream's means for DINOv2-reg ViT-``size`` (small, base, large, giant) from the data directories."""
        if size not in UPSTREAM_FILES:
            raise UsageError(f"unknown model size {size!r}: expected one of {', '.join(UPSTREAM_FILES)}")
        path = find_data(f"{UPSTREAM_DIR}/{UPSTREAM_FILES[size]}")
        if path is None:
            raise UsageError(
                f"{UPSTREAM_DIR}/{UPSTREAM_FILES[size]} is absent: put ../shared/data beside the checkout "
                "(or set MECH_INTERP_DATA), or pass the file with --means"
            )
        means = cls.load(path)
        means.source = f"upstream:{UPSTREAM_FILES[size]}"
        return means

    def save(self, path: Path) -> None:
        torch.save({b: m.clone() for b, m in self.means.items()}, path)

    def check_fits(self, n_blocks: int, n_registers: int, d_model: int) -> None:
        if self.n_blocks != n_blocks or self.shape != (n_registers, d_model):
            raise UsageError(
                f"register means {self.source} are for {self.n_blocks} blocks x {list(self.shape)}, the model "
                f"has {n_blocks} blocks x [{n_registers}, {d_model}]"
            )

    def table(self) -> pd.DataFrame:
        """Long table: block, register, dim, mean."""
        stacked = torch.stack([self.means[b] for b in range(self.n_blocks)])  # [block, register, dim]
        b, r, d = (t.flatten() for t in torch.meshgrid(*(torch.arange(s) for s in stacked.shape), indexing="ij"))
        return pd.DataFrame(
            {"block": b.numpy(), "register": r.numpy(), "dim": d.numpy(), "mean": stacked.flatten().numpy()}
        )

    def summary(self) -> pd.DataFrame:
        """Per block: the largest |mean| with its (register, dim), and the lower median |mean|."""
        rows = []
        for b in range(self.n_blocks):
            m = self.means[b]
            r, d = divmod(int(m.abs().argmax()), m.shape[1])
            rows.append(
                {
                    "block": b,
                    "register": r,
                    "dim": d,
                    "value": float(m[r, d]),
                    "median_abs": float(m.abs().flatten().median()),
                }
            )
        return pd.DataFrame(rows)


def measure(
    hooked: HookedViT,
    images: ImageSet,
    preprocessing: Preprocessing,
    augment: bool = True,
    seed: int = 0,
    batch_size: int = 16,
) -> RegisterMeans:
    """Mean register features at the input of every block over ``images`` (each seen once, augmented
    with ``preprocessing.augment`` from a generator seeded with ``seed`` when ``augment``)."""
    roles = hooked.roles
    if roles.n_registers == 0:
        raise NothingToMeasure("the model has no register tokens: there are no register means to measure")
    stats = {b: Mean() for b in range(hooked.n_blocks)}

    def keep(acts: Float[torch.Tensor, "batch token d_model"], hook) -> None:
        stats[hook.block].add(acts[:, roles.registers].flatten(1).double())

    generator = torch.Generator().manual_seed(seed)
    transform = (lambda img: preprocessing.augment(img, generator)) if augment else preprocessing.eval
    with hooked.hooks([(hook_names.resid_pre(b), keep) for b in range(hooked.n_blocks)]):
        for batch, _ in tqdm(
            images.batches(batch_size, transform),
            total=-(-len(images) // batch_size),
            desc="register means",
            unit="batch",
            leave=False,
        ):
            hooked(batch)
    shape = (roles.n_registers, -1)
    return RegisterMeans(
        {b: s.mean().float().reshape(shape) for b, s in stats.items()},
        f"measured ({'augmented' if augment else 'not augmented'}, seed {seed})",
        len(images),
    )
