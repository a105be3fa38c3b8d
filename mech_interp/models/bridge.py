"""A Hugging Face model to a ``TransformerBridge`` (the engine of TransformerLens 4) whose activations are
the HF model's own.

The bridge wraps the HF model in place and registers hook points on it; it never folds or centres
weights unless ``enable_compatibility_mode`` is called, which nothing here does (it moves every
residual value the studies measure). It is always handed the model and the tokenizer, so nothing
is fetched from the hub for a local model: a hub name is loaded by transformers first, as a local
directory is.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from .architectures import check_hf_architecture
from .engines import TRANSFORMER_BRIDGE
from .hf_model import HFModel

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def bridge_from_hf(hf: HFModel, device: torch.device | None, name: str, prepend_bos: bool = False) -> TransformerBridge:
    """Boot a bridge on ``hf`` (already in the dtype wanted): ``hf.model`` becomes part of it and switches to
    eager attention, which the bridge needs for its pattern and score hooks. ``device`` None: ``hf.model`` was
    dispatched over several devices by accelerate, whose ``hf_device_map`` the bridge reads."""
    from transformer_lens.model_bridge import TransformerBridge

    architecture = check_hf_architecture(type(hf.model).__name__, hf.source, TRANSFORMER_BRIDGE)
    hf.model.config.architectures = [architecture]  # None on models built from a config; the bridge picks its adapter by it
    dtype = next(hf.model.parameters()).dtype
    if hf.tokenizer.pad_token is None:  # as the HookedTransformer engine sets it; else the bridge may add a token
        hf.tokenizer.pad_token = hf.tokenizer.eos_token
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf.model, tokenizer=_settled(hf.tokenizer),
                                                 device=str(device) if device is not None else None, dtype=dtype)
    hf.model.eval()
    cfg = bridge.cfg
    cfg.original_architecture = architecture  # the bridge leaves it unset; manifests and checks read it
    cfg.default_prepend_bos = prepend_bos
    cfg.tokenizer_prepends_bos = len(hf.tokenizer.encode("")) > 0
    cfg.source = hf.source
    return bridge


def _settled(tokenizer):
    """A copy for the bridge to keep. Without ``add_bos_token`` in its init arguments the bridge reloads the
    tokenizer by ``name_or_path`` (a hub call for a name, a re-parse for a GGUF, an error for a tokenizer built in
    code); the copy says so in ``init_kwargs`` only, which the bridge reads and no tokenization does (the studies
    tokenize with explicit BOS handling, and the copy encodes exactly as the original: tests/test_engines.py)."""
    settled = copy.deepcopy(tokenizer)
    settled.init_kwargs["name_or_path"] = settled.init_kwargs.get("name_or_path") or "local"
    settled.init_kwargs["add_bos_token"] = True
    return settled


def load_hub_hf(name: str, dtype: torch.dtype) -> HFModel:
    """A hub model and its tokenizer through transformers (the HF cache, or the network)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hub_names import official_hub_name

    official = official_hub_name(name)
    model = AutoModelForCausalLM.from_pretrained(official, dtype=dtype, trust_remote_code=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(official, trust_remote_code=False)
    return HFModel(model=model, tokenizer=tokenizer, source=f"hub:{official}")
