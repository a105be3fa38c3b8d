"""The hub names TransformerLens knows (its official names and their aliases), in whichever version is installed:
4.x keeps the resolver in ``supported_models``, 3.x in ``loading_from_pretrained``."""

from __future__ import annotations


def official_hub_name(name: str) -> str:
    """The official HF name of ``name``; ValueError when TransformerLens does not know it."""
    try:
        from transformer_lens.supported_models import get_official_model_name
    except ImportError:  # 3.x
        from transformer_lens.loading_from_pretrained import get_official_model_name
    return get_official_model_name(name)


def known_hub_name(name: str) -> bool:
    try:
        official_hub_name(name)
    except ValueError:
        return False
    return True
