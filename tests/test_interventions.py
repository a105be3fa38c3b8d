"""Interventions change exactly what they target; perplexity equals HF's own loss."""

from __future__ import annotations

import math

import pytest
import torch

import mech_interp as mi
from mech_interp.core.criterion import MassiveCriterion, massive_mask
from mech_interp.core.recorder import ActivationRecorder
from mech_interp.data.texts import load_text
from mech_interp.data.tokens import encode, windows
from mech_interp.interventions import (
    FixedSiteMeans,
    HeadMeans,
    MassiveMeans,
    SetMean,
    ablate_head,
    make_reset,
    set_mean,
    set_zero,
)
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


# --- set_mean's two modes, on plain tensors -------------------------------------------------------

def massive_acts() -> torch.Tensor:
    """[2, 5, 8] of small values with massive entries: (seq 0, pos 0, dim 3), (seq 0, pos 2, dim 3),
    (seq 1, pos 4, dim 5), (seq 1, pos 0, dim 5)."""
    torch.manual_seed(0)
    acts = torch.rand(2, 5, 8) * 0.2 + 0.1
    acts[0, 0, 3], acts[0, 2, 3], acts[1, 4, 5], acts[1, 0, 5] = 900.0, -800.0, 700.0, 650.0
    return acts


def test_detected_mean_never_crosses_between_first_and_later_positions():
    acts = massive_acts()
    criterion = MassiveCriterion(min_abs=100, min_ratio=100)
    assert massive_mask(acts, criterion).sum() == 4
    # dim 3 has only a first-position mean, dim 5 only a later-position mean
    means = MassiveMeans("h", "detected", first_position={3: 500.0}, later={5: 300.0},
                         counts={"first_position": {3: 4}, "later": {5: 2}}, n_sequences=4)
    reset = SetMean(means, criterion)
    out = reset(acts)
    expected = acts.clone()
    expected[0, 0, 3], expected[1, 4, 5] = 500.0, 300.0  # the two entries whose (kind, dim) has a mean
    assert torch.equal(out, expected)  # (0, 2, 3) keeps -800 and (1, 0, 5) keeps 650: no mean of the other kind
    assert reset.counts == {"replaced": 2, "unmatched": 2}


def test_fixed_sites_write_given_dims_at_first_and_top1_positions_whatever_their_size():
    acts = massive_acts()
    acts[1, 0, 5] = 0.3  # sequence 1's top-1 is now (pos 4, dim 5); sequence 0's is (pos 0, dim 3)
    means = MassiveMeans("h", "fixed_sites", first_position={1: 11.0, 3: 13.0}, later={1: 21.0, 5: 25.0})
    reset = SetMean(means, MassiveCriterion())
    out = reset(acts)
    expected = acts.clone()
    expected[:, 0, 1], expected[:, 0, 3] = 11.0, 13.0  # both sequences at position 0, dim 1 far below any criterion
    expected[1, 4, 1], expected[1, 4, 5] = 21.0, 25.0  # sequence 1's top-1 position; sequence 0's is position 0
    assert torch.equal(out, expected)
    assert reset.counts["replaced"] == 2 * 2 + 1 * 2


def test_means_say_how_many_entries_they_come_from():
    acts = massive_acts()
    more = massive_acts()
    more[0, 0, 3], more[0, 2, 3], more[1, 0, 5] = 1100.0, -600.0, 0.2  # sequence 3 has no first-position entry
    criterion = MassiveCriterion(min_abs=100, min_ratio=100)
    recorder = ActivationRecorder(["h"], k=1, criterion=criterion)
    for batch in (acts, more):
        recorder.record("h", batch, torch.zeros(2, 5, dtype=torch.long))
    detected = MassiveMeans.from_stats(recorder.result(), "h")
    assert detected.first_position == pytest.approx({3: 1000.0, 5: 650.0})
    assert detected.later == pytest.approx({3: -700.0, 5: 700.0})
    assert detected.counts == {"first_position": {3: 2, 5: 1}, "later": {3: 2, 5: 2}}
    table = detected.table().set_index(["where", "dim"])
    assert table.loc[("first_position", 5), "n_entries"] == 1 and table.loc[("later", 3), "n_entries"] == 2

    fixed = FixedSiteMeans("h", [3, 5])
    for batch in (acts, more):
        fixed.record(batch)
    result = fixed.result()
    # position 0 of all 4 sequences; the top-1 position is elsewhere (position 4) in both sequences 1
    assert result.counts == {"first_position": {3: 4, 5: 4}, "later": {3: 2, 5: 2}}
    firsts = torch.cat([acts[:, 0], more[:, 0]])
    assert result.first_position == pytest.approx({3: firsts[:, 3].mean().item(), 5: firsts[:, 5].mean().item()})
    assert result.later == pytest.approx({3: (acts[1, 4, 3] + more[1, 4, 3]).item() / 2, 5: 700.0})
    assert result.n_sequences == 4


# --- head mean ablation over reference sequences ----------------------------------------------------

def reference_means(model, layer, per_position):
    reference = windows(model.tokenizer, load_text("builtin").text, 64, 6)
    means = HeadMeans.measure(model, reference.split(4), layer, per_position=per_position)
    with torch.inference_mode():
        _, cache = model.run_with_cache(reference, names_filter=f"blocks.{layer}.attn.hook_z")
    return means, cache[f"blocks.{layer}.attn.hook_z"]  # [seq, pos, head, d_head]


@pytest.mark.parametrize("per_position", [True, False])
def test_mean_ablation_writes_the_reference_means(per_position):
    model = mi.load_model("random:llama-tiny", device="cpu")
    layer, head = 1, 2
    means, reference_z = reference_means(model, layer, per_position)
    expected = reference_z.mean(0) if per_position else reference_z.flatten(0, 1).mean(0)
    torch.testing.assert_close(means.mean, expected, rtol=1e-5, atol=1e-6)
    assert means.n_sequences == 6
    tokens = encode(model.tokenizer, "Mean ablation, never a look ahead.")[None]
    n = tokens.shape[1]
    _, before = run_cache(model, tokens)
    ablation = ablate_head(layer, head, how="mean", means=means)
    _, after = run_cache(model, tokens, [ablation])
    z_name = f"blocks.{layer}.attn.hook_z"
    written = means.mean[:n, head] if per_position else means.mean[head].expand(n, -1)
    assert torch.equal(after[z_name][0, :, head], written)
    others = [h for h in range(model.cfg.n_heads) if h != head]
    assert torch.equal(after[z_name][:, :, others], before[z_name][:, :, others])
    assert ablation.counts["replaced"] == n
    longer = encode(model.tokenizer, "word " * 40)[None]
    if per_position:  # per-position means cover the reference windows' positions only
        with pytest.raises(mi.UsageError, match="per-position head means cover 64 positions, the input has"):
            run_cache(model, longer, [ablation])
    else:
        run_cache(model, longer, [ablation])


@pytest.mark.parametrize("per_position", [True, False])
def test_mean_ablation_never_looks_ahead(per_position):
    """Changing the last token must leave every earlier position's logits alone; a mean over the
    same window's positions (the old ablation) does not."""
    model = mi.load_model("random:llama-tiny", device="cpu")
    layer, head = 0, 1
    means, _ = reference_means(model, layer, per_position)
    a = encode(model.tokenizer, "The last word of this sentence is apple")[None]
    b = a.clone()
    b[0, -1] = (a[0, -1] + 7) % model.cfg.d_vocab
    ablation = ablate_head(layer, head, how="mean", means=means)
    with torch.inference_mode(), model.hooks(fwd_hooks=[ablation.as_hook()]):
        la, lb = model(a), model(b)
    assert torch.equal(la[0, :-1], lb[0, :-1])
    assert not torch.allclose(la[0, -1], lb[0, -1])

    def same_window_mean(z, hook):
        z = z.clone()
        z[:, :, head] = z[:, :, head].mean(1, keepdim=True)
        return z

    with torch.inference_mode(), model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", same_window_mean)]):
        la, lb = model(a), model(b)
    assert not torch.allclose(la[0, 0], lb[0, 0])  # the look-ahead this test exists to catch
