"""Make ``import torchvision`` (and so ``transformers``, ``timm``, ``transformer_lens``) work on CPU torch.

On machines with a CPU-only torch, the only torchvision wheel that matches the pinned torch is a CUDA
build whose compiled ops fail to load; its Python side then dies registering fake kernels for
``torchvision::nms`` ("operator torchvision::nms does not exist"). Declaring the two op schemas
first lets the import finish; the ops themselves are never called by this project. Where the
real extension loads (a GPU machine, a matching CPU build) nothing is touched.
"""

from __future__ import annotations

import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None  # kept alive: the schemas vanish with it


def ensure_importable() -> None:
    global _library
    if "torchvision" in sys.modules and _library is not None:
        return
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return  # torchvision not installed: nothing that needs it will be imported
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
        import torchvision  # noqa: F401
