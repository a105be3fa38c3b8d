"""Experiment 4 and the head scores: by hand on small patterns, and against the Hugging Face modules."""

from __future__ import annotations

import math

import jaxtyping
import pytest
import torch

import mech_interp.runs.spec  # noqa: F401
from mech_interp.data.tokens import encode
from mech_interp.metrics.attention_scores import (
    key_score,
    massive_set_score,
    sink_share,
)
from mech_interp.runs.experiments import get_experiment
from mech_interp.runs.options import RunOptions

from .conftest import PLANT_LAYER, PLANT_PROMPT

FIRST = "attention_to_first_from_later_queries"
MASSIVE = "attention_to_input_massive_from_later_queries"


def hand_pattern() -> torch.Tensor:
    """Two sequences, one head, four positions; rows are queries (causal, each sums to 1)."""
    return torch.tensor([
        [[[1.0, 0.0, 0.0, 0.0],
          [0.6, 0.4, 0.0, 0.0],
          [0.2, 0.5, 0.3, 0.0],
          [0.1, 0.2, 0.3, 0.4]]],
        [[[1.0, 0.0, 0.0, 0.0],
          [0.8, 0.2, 0.0, 0.0],
          [0.4, 0.4, 0.2, 0.0],
          [0.7, 0.1, 0.1, 0.1]]],
    ])  # [batch, head, query, key]


def test_key_score_averages_only_the_later_queries():
    pattern = hand_pattern()
    # token 0: sequence 0 (0.6 + 0.2 + 0.1) / 3 = 0.3, sequence 1 (0.8 + 0.4 + 0.7) / 3 = 19/30
    assert key_score(pattern, 0).tolist() == pytest.approx([(0.3 + 19 / 30) / 2])
    # with query 0 (whose own 1.0 is there by construction) it would be (0.475 + 0.725) / 2: the old definition
    assert pattern[:, 0, :, 0].mean().item() == pytest.approx(0.6)
    # key 2: only query 3 sees it from later: (0.3 + 0.1) / 2
    assert key_score(pattern, 2).tolist() == pytest.approx([0.2])
    assert math.isnan(key_score(pattern, 3).item())  # no query after the last key


def test_massive_set_score_by_hand():
    pattern = hand_pattern()
    massive = torch.tensor([[False, True, False, False], [True, False, True, False]])
    # sequence 0, massive key 1: queries 2, 3 see it -> (0.5 + 0.2) / 2 = 0.35 (queries 0, 1 are not counted as 0)
    # sequence 1, massive keys 0, 2: query 1 -> 0.8, query 2 -> 0.4 (key 2 is itself), query 3 -> 0.7 + 0.1
    expected = (0.35 + (0.8 + 0.4 + 0.8) / 3) / 2
    assert massive_set_score(pattern, massive).tolist() == pytest.approx([expected])
    # A sequence without a massive key before any query does not count; none at all gives NaN.
    only_last = torch.tensor([[False, False, False, True], [False, True, False, False]])
    assert massive_set_score(pattern, only_last).tolist() == pytest.approx([(0.4 + 0.1) / 2])
    assert math.isnan(massive_set_score(pattern, torch.zeros(2, 4, dtype=torch.bool)).item())


def test_sink_share_counts_heads_strictly_above_eps():
    scores = torch.tensor([[0.5, 0.1, 0.9, 0.2], [0.31, 0.3, 0.29, float("nan")]])  # [layer, head]
    per_layer, overall = sink_share(scores, 0.3)
    assert per_layer.tolist() == [0.5, 0.25] and overall == 3 / 8


def test_scores_refuse_shapes_their_annotations_exclude():
    """The annotations are checked while the tests run (jaxtyping + beartype, see pyproject.toml)."""
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'pattern'"):
        key_score(hand_pattern()[:, 0], 0)  # [batch, query, key]: no head axis
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'massive'"):
        massive_set_score(hand_pattern(), torch.zeros(2, 5, dtype=torch.bool))  # 5 keys against the pattern's 4
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'massive'"):
        massive_set_score(hand_pattern(), torch.zeros(2, 4))  # a float mask


def hf_massive_positions(hidden: torch.Tensor) -> list[int]:
    """The paper's criterion, written out on one HF hidden state [1, pos, d_model]."""
    mag = hidden[0].abs()
    median = mag.flatten().median()  # torch's median is the lower one
    return sorted({int(p) for p in ((mag > 100) & (mag >= 1000 * median)).nonzero()[:, 0]})


def test_attention_logits_and_head_scores_equal_hf(planted):
    hf, model, token_id = planted
    layer = PLANT_LAYER + 1
    experiment = get_experiment("attention")
    config = experiment.make_config({"prompt": PLANT_PROMPT, "layer": layer})
    result = experiment.fn(model, RunOptions(device="cpu"), config)
    tokens = encode(hf.tokenizer, PLANT_PROMPT)[None]
    n = tokens.shape[1]
    dots = (tokens[0] == token_id).nonzero().flatten().tolist()

    gpt2 = hf.model.transformer
    hf.model.set_attn_implementation("eager")  # the SDPA default returns no attentions (an empty tuple)
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

    assert len(out.attentions) == model.cfg.n_layers
    # Massive positions per block, from that block's input (hidden_states[L] = blocks.L.hook_resid_pre).
    expected_positions = {li: hf_massive_positions(out.hidden_states[li]) for li in range(len(out.attentions))}
    assert expected_positions[layer] == dots and all(not expected_positions[li] for li in range(layer))
    assert result.summary["massive_positions"] == expected_positions

    heads = result.tables["head_attention"].set_index(["layer", "head"])
    first = torch.zeros(len(out.attentions), n_heads)
    for li, pattern in enumerate(out.attentions):  # [batch, head, query, key], post-softmax
        p = pattern[0]
        massive = expected_positions[li]
        for h in range(n_heads):
            row = heads.loc[(li, h)]
            first[li, h] = sum(p[h, qi, 0].item() for qi in range(1, n)) / (n - 1)
            assert row[FIRST] == pytest.approx(first[li, h].item(), rel=1e-5, abs=1e-7)
            sums = [sum(p[h, qi, ki].item() for ki in massive if ki < qi) for qi in range(n) if any(ki < qi for ki in massive)]
            if sums:
                assert row[MASSIVE] == pytest.approx(sum(sums) / len(sums), rel=1e-5, abs=1e-7)
            else:
                assert math.isnan(row[MASSIVE])
    eps = config.sink_eps
    assert eps == 0.3
    assert result.summary["sink_head_share"] == pytest.approx((first > eps).float().mean().item())
    assert result.tables["sink_share"]["sink_share"].tolist() == pytest.approx((first > eps).float().mean(1).tolist())
    text = "\n".join(result.lines)
    assert "eps = 0.3" in text and "queries q > 0" in text and "blocks.L.hook_resid_pre" in text
