"""Massive activations in language models, measured through TransformerLens hook points."""

from .torchvision_compat import ensure_importable as _ensure_torchvision_importable

_ensure_torchvision_importable()

from .errors import UsageError  # noqa: E402
from .loading import Processing, load_hf, load_model  # noqa: E402
from .model_registry import DEFAULT_MODEL, list_models, register_model  # noqa: E402

__all__ = ["DEFAULT_MODEL", "Processing", "UsageError", "list_models", "load_hf", "load_model", "register_model"]
