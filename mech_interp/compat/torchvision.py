"""Make ``import torchvision`` (and so ``transformers``, ``timm``, ``transformer_lens``) work on CPU torch.

On machines with a CPU-only torch, the only torchvision wheel that matches the pinned torch is a CUDA
build whose compiled ops fail to load; its Python side then dies registering fake kernels for
``torchvision::nms`` ("operator torchvision::nms does not exist"). Declaring the two op schemas
first lets the import finish; the ops themselves are never called by this project.

``install()`` (run by ``import mech_interp``) costs nothing up front: it puts a finder on
``sys.meta_path`` that acts only when torchvision is first imported, by whoever imports it. It then
tries to load torchvision's compiled extension; only if that fails are the schemas declared.
Where the extension loads (a GPU machine, a matching CPU build) nothing is touched.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # kept alive: the schemas vanish with it


def _declare_schemas_if_needed(package_dir: Path) -> None:
    global _library
    import torch

    extensions = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not extensions or _library is not None:
        return
    try:
        torch.ops.load_library(str(extensions[0]))
    except (OSError, RuntimeError):
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)  # once is enough
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.submodule_search_locations:
            _declare_schemas_if_needed(Path(list(spec.submodule_search_locations)[0]))
        return spec


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())
