"""Named models whose metadata is readable without building them (after timm's ``_registry``).

An entry is one decorated builder function plus metadata (family, number of layers, parameters, what it is),
so a batch can check layer indices and a listing can describe the models without loading any
weights. Importing this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..validation.errors import UsageError
from .hf_model import HFModel

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # the HF architecture class, e.g. LlamaForCausalLM
    n_layers: int
    n_ctx: int  # context length, so an over-long --seq-len is refused before the model loads
    description: str
    build: Callable[[], HFModel]
    n_params: int  # so a scheduler can reserve memory for it before anything loads
    config: Callable[[], Any] | None = None  # its transformers config, without weights (what the planner reads)
    weights: Callable[[], Any] | None = None  # the Path of its weight file (a .gguf) or directory, for streamed passes


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, family: str, n_layers: int, n_ctx: int, n_params: int, config: Callable[[], Any] | None = None,
    weights: Callable[[], Any] | None = None,
) -> Callable[[Callable[[], HFModel]], Callable[[], HFModel]]:
    def decorator(fn: Callable[[], HFModel]) -> Callable[[], HFModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, family, n_layers, n_ctx, doc[0] if doc else "", fn, n_params, config, weights)
        return fn

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UsageError(f"unknown registered model {name!r}: expected one of {', '.join(list_models())}")
    return _REGISTRY[name]


def build_registered(name: str) -> HFModel:
    return model_entry(name).build()
