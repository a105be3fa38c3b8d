"""Interventions change exactly what they target; perplexity equals HF's own loss."""

from __future__ import annotations

import math

import pytest
import torch

import mech_interp as mi
from mech_interp.core.criterion import MassiveCriterion
from mech_interp.data.texts import load_text
from mech_interp.data.tokens import encode, windows
from mech_interp.interventions import MassiveMeans, ablate_head, make_reset, set_mean, set_zero
from mech_interp.metrics.layer_stats import collect_layer_stats
from mech_interp.metrics.perplexity import perplexity
from mech_interp.models.conversion import hooked_from_hf
from mech_interp.models.hook_names import resid_post

from .conftest import PLANT_DIM, PLANT_LAYER, PLANT_PROMPT, plant_massive_activation


def run_cache(model, tokens, interventions=()):
    with torch.inference_mode(), model.hooks(fwd_hooks=[i.as_hook() for i in interventions]):
        logits, cache = model.run_with_cache(tokens)
    return logits, cache


def test_set_zero_changes_exactly_the_massive_entries(planted):
    hf, model, token_id = planted
    tokens = encode(hf.tokenizer, PLANT_PROMPT)[None]
    positions = (tokens[0] == token_id).nonzero().flatten()
    _, before = run_cache(model, tokens)
    zero = set_zero(PLANT_LAYER)
    _, after = run_cache(model, tokens, [zero])
    assert zero.counts["replaced"] == len(positions)
    # Upstream of the hook: untouched, bit for bit.
    for name in [resid_post(PLANT_LAYER - 1), f"blocks.{PLANT_LAYER}.hook_resid_mid", f"blocks.{PLANT_LAYER}.hook_mlp_out"]:
        assert torch.equal(before[name], after[name]), name
    # At the hook: exactly the planted entries are zero, everything else identical.
    diff = before[resid_post(PLANT_LAYER)] != after[resid_post(PLANT_LAYER)]
    assert diff.nonzero()[:, 1:].tolist() == [[p, PLANT_DIM] for p in positions.tolist()]
    assert torch.all(after[resid_post(PLANT_LAYER)][0, positions, PLANT_DIM] == 0)
    # Downstream it propagates.
    assert not torch.allclose(before[resid_post(PLANT_LAYER + 1)], after[resid_post(PLANT_LAYER + 1)])


def test_set_mean_writes_the_measured_means(planted):
    hf, model, token_id = planted
    seqs = [encode(hf.tokenizer, t)[None] for t in ["Wow. Great.", "Stop. Now.", PLANT_PROMPT]]
    stats = collect_layer_stats(model, seqs, hook_names=[resid_post(PLANT_LAYER)], progress=False)
    means = MassiveMeans.from_stats(stats, resid_post(PLANT_LAYER))
    assert list(means.later) == [PLANT_DIM] and means.first_position == {}
    assert means.counts["later"][PLANT_DIM] == 6  # two "." in each of the three texts
    tokens = seqs[2]
    _, before = run_cache(model, tokens)
    reset = set_mean(means)
    _, after = run_cache(model, tokens, [reset])
    positions = (tokens[0] == token_id).nonzero().flatten()
    target = after[resid_post(PLANT_LAYER)]
    torch.testing.assert_close(target[0, positions, PLANT_DIM], torch.full((len(positions),), means.later[PLANT_DIM]))
    keep = torch.ones_like(target, dtype=torch.bool)
    keep[0, positions, PLANT_DIM] = False
    assert torch.equal(target[keep], before[resid_post(PLANT_LAYER)][keep])
    assert reset.counts == {"replaced": len(positions), "unmatched": 0}


def test_set_mean_at_a_shared_bos_reproduces_the_original_exactly():
    """With the same BOS first, position 0's state is identical in every sequence (causal
    attention), so its mean is its value and set_mean must change nothing."""
    hf = mi.load_hf("random:gpt2-tiny")
    bos = hf.tokenizer.bos_token_id
    plant_massive_activation(hf, bos)
    model = hooked_from_hf(hf, torch.device("cpu"), torch.float32, prepend_bos=True)
    seqs = windows(hf.tokenizer, load_text("builtin").text, 48, 6, prepend_bos=True)
    stats = collect_layer_stats(model, seqs.split(2), hook_names=[resid_post(PLANT_LAYER)], progress=False)
    means = MassiveMeans.from_stats(stats, resid_post(PLANT_LAYER))
    assert list(means.first_position) == [PLANT_DIM]
    with torch.inference_mode():
        original = model(seqs)
        reset = set_mean(means)
        with model.hooks(fwd_hooks=[reset.as_hook()]):
            replaced = model(seqs)
        fixed = set_mean(MassiveMeans(means.site, "fixed_sites", means.first_position, {}, n_sequences=6))
        with model.hooks(fwd_hooks=[fixed.as_hook()]):
            fixed_replaced = model(seqs)
    torch.testing.assert_close(fixed_replaced, original, rtol=1e-5, atol=1e-5)
    assert reset.counts["replaced"] >= len(seqs)
    torch.testing.assert_close(replaced, original, rtol=1e-5, atol=1e-5)


def test_unknown_reset_is_a_usage_error():
    with pytest.raises(mi.UsageError, match="unknown reset type 'set_one'.*set_zero, set_mean"):
        make_reset("set_one", 0, None, MassiveCriterion())


def test_ablate_head_changes_only_that_head():
    model = mi.load_model("random:llama-tiny", device="cpu")
    tokens = encode(model.tokenizer, "A head is a slice of hook_z before W_O.")[None]
    layer, head = 1, 2
    _, before = run_cache(model, tokens)
    _, after = run_cache(model, tokens, [ablate_head(layer, head)])
    z_name = f"blocks.{layer}.attn.hook_z"
    assert torch.all(after[z_name][:, :, head] == 0)
    others = [h for h in range(model.cfg.n_heads) if h != head]
    assert torch.equal(after[z_name][:, :, others], before[z_name][:, :, others])
    # The attention output loses exactly that head's contribution z_h @ W_O[h].
    with torch.no_grad():
        contribution = before[z_name][0, :, head] @ model.blocks[layer].attn.W_O[head]
    torch.testing.assert_close(after[f"blocks.{layer}.hook_attn_out"][0],
                               before[f"blocks.{layer}.hook_attn_out"][0] - contribution, rtol=1e-4, atol=1e-5)
    assert torch.equal(after[resid_post(layer - 1)], before[resid_post(layer - 1)])


def hf_perplexity(hf_model, seqs) -> float:
    with torch.inference_mode():
        losses = [hf_model(s[None], labels=s[None]).loss.item() for s in seqs]
    return math.exp(sum(losses) / len(losses))  # equal-length windows: mean of means = overall mean


def test_perplexity_equals_hf_loss():
    hf = mi.load_hf("random:llama-tiny")
    model = hooked_from_hf(hf, torch.device("cpu"), torch.float32)
    seqs = windows(hf.tokenizer, load_text("builtin").text, 40, 5)
    result = perplexity(model, seqs, batch_size=2, progress=False)
    assert result.n_tokens == 5 * 39
    assert result.value == pytest.approx(hf_perplexity(hf.model, seqs), rel=1e-5)


def test_smollm2_perplexity_equals_hf_loss(smollm2):
    hf, model = smollm2
    seqs = windows(hf.tokenizer, load_text("builtin").text, 64, 2)
    assert perplexity(model, seqs, progress=False).value == pytest.approx(hf_perplexity(hf.model, seqs), rel=1e-4)
