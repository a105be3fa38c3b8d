"""Registry metadata, read without building a model, says what the built model is."""

from __future__ import annotations

import pytest

import mech_interp as mi
from mech_interp.models.registry import model_entry


def _built(hf) -> tuple[str, int, int]:
    config = hf.model.config
    n_ctx = getattr(config, "max_position_embeddings", None) or config.n_positions
    return type(hf.model).__name__, config.num_hidden_layers, n_ctx


LARGE = {"random:llama-1b"}  # built on the meta device: the same config without 4 GB of weights


@pytest.mark.parametrize("name", [m for m in mi.list_models() if m != "smollm2-135m"])
def test_registered_metadata_matches_the_built_model(name):
    import torch

    entry = model_entry(name)
    with torch.device("meta" if name in LARGE else "cpu"):
        hf = mi.load_hf(name)
    assert (entry.family, entry.n_layers, entry.n_ctx) == _built(hf)
    assert entry.n_params == sum(p.numel() for p in hf.model.parameters())  # what a Ray task reserves memory for
    assert entry.description


def test_smollm2_metadata_matches_the_built_model(smollm2):
    hf, _ = smollm2
    entry = model_entry("smollm2-135m")
    assert (entry.family, entry.n_layers, entry.n_ctx) == _built(hf)
    assert entry.n_params == sum(p.numel() for p in hf.model.parameters())


def test_planted_model_has_its_plant():
    import torch

    from mech_interp.core.criterion import MassiveCriterion, massive_mask
    from mech_interp.data.tokens import encode
    from mech_interp.models.planted import PLANT_DIM, PLANT_LAYER

    hf = mi.load_hf("planted:gpt2-tiny")
    tokens = encode(hf.tokenizer, "One. Two three. Four")[None]
    with torch.inference_mode():
        hidden = hf.model(tokens, output_hidden_states=True).hidden_states[PLANT_LAYER + 1]
    where = massive_mask(hidden, MassiveCriterion()).nonzero().tolist()
    dots = (tokens[0] == hf.tokenizer.convert_tokens_to_ids(".")).nonzero().flatten().tolist()
    assert where == [[0, p, PLANT_DIM] for p in dots] and len(dots) == 2
