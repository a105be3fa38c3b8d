"""Experiment 4 against an independent computation from the Hugging Face modules."""

from __future__ import annotations

import math

import pytest
import torch

import mech_interp.runs.spec  # noqa: F401
from mech_interp.data.tokens import encode
from mech_interp.runs.experiments import get_experiment
from mech_interp.runs.options import RunOptions

from .conftest import PLANT_LAYER, PLANT_PROMPT


def test_attention_logits_and_head_shares_equal_hf(planted):
    hf, model, token_id = planted
    layer = PLANT_LAYER + 1
    experiment = get_experiment("attention")
    result = experiment.fn(model, RunOptions(device="cpu"), experiment.make_config({"prompt": PLANT_PROMPT, "layer": layer}))
    tokens = encode(hf.tokenizer, PLANT_PROMPT)[None]
    n = tokens.shape[1]
    massive = (tokens[0] == token_id).nonzero().flatten().tolist()
    assert result.summary["massive_positions"] == massive and result.summary["positions_source"] == "detected"

    gpt2 = hf.model.transformer
    with torch.inference_mode():
        out = hf.model(tokens, output_hidden_states=True, output_attentions=True)
        block = gpt2.h[layer]
        d_model, n_heads = gpt2.config.n_embd, gpt2.config.n_head
        d_head = d_model // n_heads
        q, k, _ = block.attn.c_attn(block.ln_1(out.hidden_states[layer])).split(d_model, dim=-1)
        q, k = (t.view(1, n, n_heads, d_head).transpose(1, 2) for t in (q, k))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(d_head))[0]  # [head, query, key]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    logits = result.tables["attention_logits"].pivot(index="query_pos", columns="key_pos", values="logit")
    got = torch.tensor(logits.values, dtype=torch.float32)
    assert torch.isnan(got[~causal]).all()  # above the diagonal is masked, not averaged in
    torch.testing.assert_close(got[causal], scores.mean(0)[causal], rtol=1e-4, atol=1e-4)

    heads = result.tables["head_attention"].set_index(["layer", "head"])
    for li, pattern in enumerate(out.attentions):  # [batch, head, query, key], post-softmax
        p = pattern[0]
        for h in range(n_heads):
            row = heads.loc[(li, h)]
            assert row["attention_to_first"] == pytest.approx(p[h, :, 0].mean().item(), rel=1e-4, abs=1e-6)
            expected = p[h, min(massive):, massive].sum(-1).mean().item()
            assert row["attention_to_massive"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
