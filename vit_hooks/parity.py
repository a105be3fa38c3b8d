"""Parity of the converted embedded ViT with the ONNX graph it came from.

For each image, every hook point with an ONNX counterpart (``embedded_onnx.ONNX_TENSORS``: block 0's
input, every block's attention output, MLP output, output and attention probabilities, the final
LayerNorm) is compared: the largest |timm - onnxruntime| and the largest |onnxruntime| (for scale).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from . import hook_names
from .embedded_onnx import N_LAYERS, onnx_intermediates
from .hooks import HookedViT

_KIND_TO_HOOK = {"block_out": "resid_post", "attn_out": "attn_out", "mlp_out": "mlp_out", "pattern": "pattern"}


def hook_for(key: str) -> str:
    if key == "embeddings":
        return hook_names.resid_pre(0)
    if key == "final":
        return hook_names.FINAL
    kind, block = key.split(".")
    return hook_names.act_name(_KIND_TO_HOOK[kind], int(block))


def embedded_parity(hooked: HookedViT, images: Float[torch.Tensor, "batch 3 height width"]) -> pd.DataFrame:
    """One row per compared tensor: hook name, ONNX tensor key, max |difference|, max |ONNX value|."""
    reference = onnx_intermediates(images.numpy())
    if hooked.n_blocks != N_LAYERS:
        raise ValueError(f"the embedded graph has {N_LAYERS} layers, the model {hooked.n_blocks}")
    names = {key: hook_for(key) for key in reference}
    _, cache = hooked.run_with_cache(images, list(names.values()))
    rows = []
    for key, name in names.items():
        ours, theirs = cache[name].numpy(), reference[key]
        rows.append(
            {
                "hook": name,
                "onnx": key,
                "max_abs_diff": float(np.abs(ours - theirs).max()),
                "max_abs_onnx": float(np.abs(theirs).max()),
                "shape": list(theirs.shape),
            }
        )
    return pd.DataFrame(rows)
