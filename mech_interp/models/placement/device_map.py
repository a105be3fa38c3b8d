"""``--device-map``: a whole model split over the machine's devices, read and checked before any weight is.

A name (accelerate's: ``auto`` and ``balanced`` spread the blocks evenly over the GPUs, ``balanced_low_0`` leaves
GPU 0 room for the batch, ``sequential`` fills GPU 0 first) or a JSON file mapping module names to devices (an
integer GPU index, ``"cuda:N"``, ``"mps"`` or ``"cpu"``). The TransformerLens 3 engine's own split (``n_devices``) puts
every block on one GPU in 3.9, so that engine takes a map only where it names one device; the bridge engine dispatches the HF
model with accelerate and boots on it, which serves every map, but TransformerLens 4 refuses maps that mix GPUs with
the CPU (not yet verified there), and so do we, before loading. Disk targets are refused: ``--placement streamed``
reads one block at a time from the files instead. On a machine without a GPU every named map is the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...validation.errors import UsageError

NAMED = ("auto", "balanced", "balanced_low_0", "sequential")
EVEN = ("auto", "balanced")  # what a HookedTransformer's n_devices split is
ACCEPTED = (f"one of {', '.join(NAMED)}, or a JSON file mapping module names to devices (a GPU index, cuda:N, mps "
            "or cpu)")


@dataclass(frozen=True)
class DeviceMap:
    text: str  # as given
    named: str | None  # one of NAMED, or None for a file
    modules: dict[str, str | int] | None = None  # a file's map

    @property
    def devices(self) -> list[str]:
        """The devices it places modules on ("cpu" alone on a machine without a GPU, for a named map)."""
        if self.modules is not None:
            return sorted({f"cuda:{v}" if isinstance(v, int) else v for v in self.modules.values()})
        count = _cuda_count()
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]

    @property
    def single(self) -> str | None:
        """The one device a file maps every module to; None for a split or a named map."""
        return self.devices[0] if self.modules is not None and len(self.devices) == 1 else None

    def n_devices(self, engine: str) -> int:
        """The GPUs a HookedTransformer splits its blocks over (1: one device, no split)."""
        from ..engines import HOOKED_TRANSFORMER

        if self.single is not None:
            return 1
        if engine == HOOKED_TRANSFORMER and self.named not in EVEN:
            raise UsageError(f"--device-map {self.text!r} needs the transformer_bridge engine: the hooked_transformer "
                             f"engine splits blocks evenly over the GPUs ({' or '.join(EVEN)}); pass one of those, or "
                             "--engine transformer_bridge")
        n = max(1, _cuda_count())
        if engine == HOOKED_TRANSFORMER and n > 1:
            # TransformerLens 3.9's move_model_modules_to_device puts every module on the one GPU with the most free
            # memory, while its forward moves the residual stream block by block over all of them
            raise UsageError(f"--device-map {self.text!r} over {n} GPUs: the hooked_transformer engine's split "
                             "(TransformerLens 3.9, n_devices) places every block on one GPU; use --engine "
                             "transformer_bridge, or one GPU with --device")
        return n

    def accelerate_map(self, model, max_memory: int | None) -> dict[str, Any]:
        """The module -> device map accelerate dispatches ``model`` (an HF model on the CPU) with."""
        if self.modules is not None:
            return dict(self.modules)
        from accelerate import infer_auto_device_map
        from accelerate.utils import get_balanced_memory, get_max_memory

        no_split = getattr(model, "_no_split_modules", None) or []
        caps = None if max_memory is None else {**{i: max_memory for i in range(_cuda_count())}, "cpu": max_memory}
        if self.named == "sequential":
            budget = get_max_memory(caps)
        else:
            budget = get_balanced_memory(model, max_memory=caps, no_split_module_classes=no_split,
                                         low_zero=self.named == "balanced_low_0")
        placed = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=no_split)
        _check_targets(placed, f"--device-map {self.text!r} with --max-memory", _cuda_count())
        return placed


def parse_device_map(text: str) -> DeviceMap:
    """``text`` as a device map; one line naming the bad value and the accepted ones otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"--device-map {text!r} is not a device map: expected {ACCEPTED}")
    if text in NAMED:
        return DeviceMap(text, text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(f"--device-map {text!r} is neither a named map nor a file: expected {ACCEPTED}")
    from ...storage.user_files import read_json_object

    modules = read_json_object(path, f"--device-map {text!r}", f": expected {ACCEPTED}")
    if not modules:
        raise UsageError(f"--device-map {text!r} maps no module: expected {ACCEPTED}")
    _check_targets(modules, f"--device-map {text!r}", _cuda_count())
    return DeviceMap(text, None, modules)


def _check_targets(modules: dict[str, Any], where: str, n_cuda: int) -> None:
    have = f"cuda:0..cuda:{n_cuda - 1}" if n_cuda else "no CUDA device"
    kinds = set()
    for name, device in modules.items():
        index = device if isinstance(device, int) and not isinstance(device, bool) else \
            int(device[5:]) if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit() else None
        if device == "disk":
            raise UsageError(f"{where} puts {name!r} on disk: offloading to disk is not supported; use --placement "
                             "streamed, which reads one block at a time from the model's files")
        if (index is None and device not in ("cpu", "mps", "cuda")) or (index is not None and index < 0):
            raise UsageError(f"{where} puts {name!r} on {device!r}: expected {ACCEPTED}")
        if device == "cuda":
            index = 0
        if index is not None and index >= n_cuda:
            raise UsageError(f"{where} puts {name!r} on cuda:{index}, which this machine lacks (it has {have})")
        if device == "mps":
            import torch

            if not torch.backends.mps.is_available():
                raise UsageError(f"{where} puts {name!r} on mps, which this machine lacks")
        kinds.add("gpu" if index is not None or device == "mps" else "cpu")
    if kinds == {"gpu", "cpu"}:
        raise UsageError(f"{where} mixes GPUs with the CPU: TransformerLens 4 refuses such maps until they are "
                         "verified; map every module to GPUs, or everything to the CPU, or use --placement streamed")


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
