"""A massive activation planted at a known (layer, token, dim) of a random-init GPT-2.

The token's embedding gets a private marker dim; one MLP neuron of block ``layer`` reads only that
marker (with a bias that keeps it off for every other token) and writes only to ``dim``. Detection,
interventions and attribution can then be checked against where the value is known to be.
"""

from __future__ import annotations

PLANT_LAYER, PLANT_DIM, MARKER_DIM, PLANT_CHAR = 2, 17, 5, "."


def plant_massive_activation(hf, token_id: int, layer: int = PLANT_LAYER, dim: int = PLANT_DIM,
                             marker: int = MARKER_DIM, scale: float = 200.0) -> None:
    """Edit ``hf`` (an ``HFModel`` holding a GPT-2) in place; ``scale`` sets the size (~2 x scale)."""
    import torch

    model = hf.model.transformer
    with torch.no_grad():
        model.wte.weight[:, marker] = 0.0
        model.wpe.weight[:, marker] = 0.0
        model.wte.weight[token_id, marker] = 3.0
        mlp = model.h[layer].mlp
        mlp.c_fc.weight[:, 0] = 0.0  # Conv1D: [d_model, d_mlp]
        mlp.c_fc.weight[marker, 0] = 5.0
        mlp.c_fc.bias[0] = -20.0  # off unless the marker is present
        mlp.c_proj.weight[0, :] = 0.0  # [d_mlp, d_model]
        mlp.c_proj.weight[0, dim] = scale
