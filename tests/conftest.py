"""Shared fixtures: tiny random-init models (fast), a planted massive activation, the real SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import mech_interp as mi
from mech_interp.loading import hooked_from_hf

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CPU = torch.device("cpu")

# Planted site: block PLANT_LAYER's MLP writes PLANT_VALUE-scale output to dim PLANT_DIM at every
# position holding the token PLANT_CHAR, and nowhere else.
PLANT_LAYER, PLANT_DIM, MARKER_DIM, PLANT_CHAR = 2, 17, 5, "."
PLANT_PROMPT = "Hello there. How are you today? Fine."


@pytest.fixture(scope="session", autouse=True)
def _quiet_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the repository's sibling ../shared/data holds the test data")
    return path


def plant_massive_activation(hf: mi.model_registry.HFModel, token_id: int, layer: int = PLANT_LAYER,
                             dim: int = PLANT_DIM, marker: int = MARKER_DIM, scale: float = 200.0) -> None:
    """Edit a random GPT-2 so that block ``layer``'s MLP emits a huge value in ``dim`` for one token.

    The token's embedding gets a private marker dim; one MLP neuron reads only that marker (with a
    bias that keeps it off for every other token) and writes only to ``dim``.
    """
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


@pytest.fixture
def planted():
    """(HF model, HookedTransformer, token id) with a massive activation planted at PLANT_LAYER."""
    hf = mi.load_hf("random:gpt2-tiny")
    token_id = hf.tokenizer.convert_tokens_to_ids(PLANT_CHAR)
    plant_massive_activation(hf, token_id)
    return hf, hooked_from_hf(hf, CPU, torch.float32), token_id


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M: (HF model bundle, HookedTransformer). Loaded once per session."""
    hf = mi.load_hf("smollm2-135m")
    return hf, hooked_from_hf(hf, CPU, torch.float32)
