"""The layer-wise statistics of an ordinary HF forward: the package's recorder fed from forward hooks on every
decoder layer of a whole model in memory. What the streamed pass (and its benchmarks) must reproduce."""

from __future__ import annotations

import torch

from mech_interp.core.layer_stats import LayerStats
from mech_interp.core.recorder import ActivationRecorder


def hf_layer_stats(model, windows: torch.Tensor, batch_size: int) -> LayerStats:
    """Statistics of every ``blocks.L.hook_resid_post`` (decoder layer L's output) of HF ``model`` over ``windows``,
    run on the model's device in batches of ``batch_size``."""
    decoder = model.get_decoder()
    device = next(model.parameters()).device
    sites = [f"blocks.{i}.hook_resid_post" for i in range(len(decoder.layers))]
    recorder, current = ActivationRecorder(sites), {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: recorder.record(sites[i], out, current["tokens"]))
             for i, layer in enumerate(decoder.layers)]
    try:
        with torch.inference_mode():
            for tokens in windows.split(batch_size):
                current["tokens"] = tokens.to(device)
                recorder.run_batch(lambda: decoder(current["tokens"], use_cache=False))
    finally:
        for hook in hooks:
            hook.remove()
    return recorder.result(layer_of=lambda site: int(site.split(".")[1]), label_columns=("token_id", "token"))
