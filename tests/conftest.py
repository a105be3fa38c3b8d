"""Shared fixtures: tiny random-init models (fast), a planted massive activation, the real SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import mech_interp as mi
from mech_interp.data.locations import find_data
from mech_interp.models.conversion import hooked_from_hf
from mech_interp.models.planted import MARKER_DIM, PLANT_CHAR, PLANT_DIM, PLANT_LAYER, plant_massive_activation  # noqa: F401

CPU = torch.device("cpu")
PLANT_PROMPT = "Hello there. How are you today? Fine."


@pytest.fixture(scope="session", autouse=True)
def _quiet_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data(relative: str) -> Path:
    path = find_data(relative)
    if path is None:
        pytest.skip(f"{relative} is absent: put ../shared/data beside the checkout (or set MECH_INTERP_DATA) to run this test")
    return path


@pytest.fixture
def planted():
    """(HF model, HookedTransformer, token id) with a massive activation planted at PLANT_LAYER."""
    hf = mi.load_hf("planted:gpt2-tiny")
    token_id = hf.tokenizer.convert_tokens_to_ids(PLANT_CHAR)
    return hf, hooked_from_hf(hf, CPU, torch.float32), token_id


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M: (HF model bundle, HookedTransformer on the users' fast path). Once per session."""
    hf = mi.load_hf("smollm2-135m")
    return hf, mi.load_model("smollm2-135m", device="cpu", fast_paths=True)
