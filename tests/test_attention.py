"""Experiment 4 and the head scores: by hand on small patterns, against the Hugging Face modules, and on the
trainer's slot and sink models with the layout their checkpoint gives."""

from __future__ import annotations

import math
from pathlib import Path

import jaxtyping
import pytest
import torch

import mech_interp as mi
import mech_interp.runs.spec  # noqa: F401
from mech_interp.core.criterion import MassiveCriterion
from mech_interp.core.token_layout import TokenLayout
from mech_interp.data.tokens import encode
from mech_interp.metrics.attention_scores import (
    key_score,
    massive_set_score,
    sink_share,
)
from mech_interp.models.context import ModelContext
from mech_interp.models.run_options import RunOptions
from mech_interp.models.spec import ModelSpec
from mech_interp.runs.experiments import get_experiment
from mech_interp.studies.heads.scores import head_scores

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
    result = experiment.fn(ModelContext(model, RunOptions(device="cpu")), config)
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


# --- the trainer's variants, with the layout of their checkpoint ------------------------------------------

def trainer_checkpoint(root: Path, variant: str):
    """A tiny random model of the trainer's ``variant`` written as its checkpoint, loaded back as the CLI loads it,
    with the layout its hooked_config.json gives."""
    from mech_interp.models.tokenizers import byte_tokenizer
    from train_gpt2_bias.checkpoint import export_model
    from train_gpt2_bias.model import build_model, config_dict, hooked_config

    tokenizer = byte_tokenizer()
    cfg = hooked_config({"n_layers": 2, "d_model": 32, "n_heads": 4, "n_ctx": 24, "variant": variant}, len(tokenizer))
    config = config_dict(cfg, variant, False)
    export_model(root / variant, build_model(config, seed=0), config, tokenizer)
    return mi.load_model(str(root / variant), device="cpu"), ModelSpec.parse(str(root / variant)).metadata().layout


@pytest.fixture(scope="module")
def trainer_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    return {variant: trainer_checkpoint(root, variant) for variant in ("attn_bias", "sink")}


def patterns(model, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    kept = {}
    with torch.inference_mode(), model.hooks(fwd_hooks=[(f"blocks.{i}.attn.hook_pattern",
                                                         lambda p, hook: kept.setdefault(hook.layer(), p.clone()))
                                                        for i in range(model.cfg.n_layers)]):
        model(tokens, return_type=None)
    return kept


PROMPT = "The cat sat."


def test_the_attention_experiment_reads_the_key_slot_and_the_prefix_from_the_checkpoint_layout(trainer_models):
    """attn_bias: key column 0 is the slot k', reported apart; position 0 is column 1. sink: position 0 is
    the learned prefix, labelled so, and the first score reads it (column 0, there is no slot)."""
    experiment = get_experiment("attention")
    config = experiment.make_config({"prompt": PROMPT, "layer": 1})
    for variant, column, n_prefix in (("attn_bias", 1, 0), ("sink", 0, 1)):
        model, layout = trainer_models[variant]
        assert layout == TokenLayout(n_prefix_tokens=n_prefix, n_key_slots=1 - n_prefix)
        result = experiment.fn(ModelContext(model, RunOptions(device="cpu"), layout), config)
        tokens = encode(model.tokenizer, PROMPT)[None]
        n_pos = n_prefix + tokens.shape[1]
        assert result.summary["tokens"] == ["<prefix>"] * n_prefix + [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
        assert len(result.tables["attention_logits"]) == n_pos * n_pos  # positions only, no slot column
        heads = result.tables["head_attention"].set_index(["layer", "head"])
        for layer, pattern in patterns(model, tokens).items():  # [1, head, query, slots + pos]
            assert pattern.shape[-1] == (1 - n_prefix) + n_pos
            for h in range(model.cfg.n_heads):
                row = heads.loc[(layer, h)]
                assert row[FIRST] == pytest.approx(pattern[0, h, 1:, column].mean().item(), rel=1e-5)
                slot = pattern[0, h, :, 0].mean().item() if variant == "attn_bias" else 0.0
                assert row["slot_attention"] == pytest.approx(slot, rel=1e-5)
        assert ("attention to key slots" in "\n".join(result.lines)) == (variant == "attn_bias")


def test_head_scores_read_the_slot_apart_with_the_checkpoint_layout(trainer_models):
    model, layout = trainer_models["attn_bias"]
    seqs = encode(model.tokenizer, PROMPT)[None].repeat(3, 1)
    seqs[1:] = seqs[1:].roll(2, dims=1)
    scores = head_scores(model, seqs, MassiveCriterion(), layout=layout)
    for layer, pattern in patterns(model, seqs).items():  # [batch, head, query, 1 + pos]
        torch.testing.assert_close(scores.slot[layer], pattern[..., 0].mean((0, 2)))
        torch.testing.assert_close(scores.first[:, layer], pattern[:, :, 1:, 1].mean(-1))
