"""An in-memory Hugging Face model to a ``HookedTransformer`` whose activations equal the HF model's.

No weight processing is applied unless asked: TransformerLens' defaults (fold_ln,
center_writing_weights, ...) change residual values, LayerNorm outputs and logits.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading

from .architectures import check_hf_architecture
from .hf_model import HFModel


@dataclass(frozen=True)
class Processing:
    """TransformerLens weight processing; all off keeps activations equal to the HF model's."""

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False
    refactor_factored_attn_matrices: bool = False


def hooked_from_hf(
    hf: HFModel,
    device: torch.device,
    dtype: torch.dtype,
    processing: Processing = Processing(),
    prepend_bos: bool = False,
) -> HookedTransformer:
    """Convert an in-memory HF model without any hub access.

    TransformerLens builds its config from a directory name or a hub name; we give it a scratch
    directory holding only config.json, named neutrally because TransformerLens also guesses the
    architecture from substrings such as "llama" in the name.
    """
    config = hf.model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(hf.model).__name__]  # None on models built from a config
    check_hf_architecture(config["architectures"][0], hf.source)
    if config.get("model_type") == "gpt2":
        config.setdefault("n_ctx", config["n_positions"])  # transformers 5 no longer saves it
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = Path(tmp) / "model"
        cfg_dir.mkdir()
        (cfg_dir / "config.json").write_text(json.dumps(config))
        cfg = tl_loading.get_pretrained_model_config(
            str(cfg_dir), hf_cfg=config, fold_ln=processing.fold_ln, device=str(device),
            dtype=dtype, default_prepend_bos=prepend_bos,
        )
        state_dict = tl_loading.get_pretrained_state_dict(str(cfg_dir), cfg, hf.model, dtype=dtype)
    cfg.tokenizer_name = None  # the scratch directory is gone; the tokenizer is attached below
    with torch.device(device):  # allocate the (uninitialised) weights where they will live, not on the host first
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **asdict(processing))  # key by key, freeing as it goes
    model.to(device)
    attach_tokenizer(model, hf.tokenizer)
    model.cfg.source = hf.source  # type: ignore[attr-defined]
    return model


def attach_tokenizer(model: HookedTransformer, tokenizer) -> None:
    # HookedTransformer.set_tokenizer reloads the tokenizer by name_or_path (a hub call for names,
    # a slow re-parse for GGUF); we tokenize with explicit BOS handling ourselves and need none of it.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.tokenizer = tokenizer
    model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
