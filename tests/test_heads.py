"""The head study: ablations change exactly what they target, attribution names planted writers and
adds up, the fast single-head sweep equals the naive loop, scores and CIs by hand, bad input refused."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import mech_interp as mi
import mech_interp.runs.spec  # registers the experiments
from mech_interp.core.criterion import MassiveCriterion
from mech_interp.core.token_layout import TokenLayout
from mech_interp.data.texts import load_text
from mech_interp.data.tokens import encode, windows
from mech_interp.interventions.heads import (
    HeadMeans,
    ablate_head,
    ablate_head_per_row,
    ablate_heads,
    zero_output_slice,
)
from mech_interp.metrics.attention_scores import (
    massive_set_score,
    slot_attention,
    token_keys,
)
from mech_interp.metrics.attribution import direct_writes, neuron_writes
from mech_interp.metrics.bootstrap import bootstrap_ci, nan_std
from mech_interp.models.context import ModelContext
from mech_interp.models.hook_names import resid_post
from mech_interp.models.run_options import RunOptions
from mech_interp.runs.experiments import get_experiment
from mech_interp.studies.heads.neuron_edits import ZeroNeuron, zeroed_weights
from mech_interp.studies.heads.reduced_forward import residual_tokens
from mech_interp.studies.heads.scores import head_scores
from mech_interp.studies.heads.sweep import fast_sweep, naive_sweep

from .cli_runs import assert_refused, run_cli
from .conftest import MARKER_DIM, PLANT_DIM, PLANT_LAYER, PLANT_PROMPT
from .test_attention import trainer_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py says why


LOOSE = MassiveCriterion(min_abs=0.0, min_ratio=5.0)  # random-init LLaMA: top |a| ~0.15, ~8x its median
PLAIN = TokenLayout()  # the layout of every model here but the trainer's: no prefix position, no key slot


def cache(model, tokens, interventions=()):
    with torch.inference_mode(), model.hooks(fwd_hooks=[i.as_hook() for i in interventions]):
        return model.run_with_cache(tokens)[1]


def texts(model, n=3, seq_len=40):
    return windows(model.tokenizer, load_text("builtin").text, seq_len, n)


# --- ablation --------------------------------------------------------------------------------------

def test_ablate_heads_changes_exactly_those_heads_and_what_is_downstream():
    model = mi.load_model("random:llama-tiny", device="cpu", fast_paths=True)
    tokens = encode(model.tokenizer, "Heads live in hook_z, before W_O.")[None]
    heads = [(1, 0), (1, 3), (2, 1)]
    before = cache(model, tokens)
    after = cache(model, tokens, ablate_heads(heads))
    for layer in (1, 2):
        z = f"blocks.{layer}.attn.hook_z"
        gone = [h for li, h in heads if li == layer]
        kept = [h for h in range(model.cfg.n_heads) if h not in gone]
        assert torch.all(after[z][:, :, gone] == 0)
        if layer == 1:  # block 2's other heads see a changed input: only block 1's are untouched
            assert torch.equal(after[z][:, :, kept], before[z][:, :, kept])
    assert torch.equal(after[resid_post(0)], before[resid_post(0)])  # nothing upstream moves
    assert not torch.allclose(after[resid_post(3)], before[resid_post(3)])
    with torch.no_grad():
        removed = sum(before["blocks.1.attn.hook_z"][0, :, h] @ model.blocks[1].attn.W_O[h] for h in (0, 3))
    torch.testing.assert_close(after["blocks.1.hook_attn_out"][0], before["blocks.1.hook_attn_out"][0] - removed,
                               rtol=1e-4, atol=1e-5)


def test_slice_contrast_zeroes_exactly_its_residual_dims():
    model = mi.load_model("random:gpt2-tiny", device="cpu", fast_paths=True)
    tokens = encode(model.tokenizer, "The earlier study zeroed residual dims, not a head.")[None]
    layer, head, d_head = 2, 1, model.cfg.d_head
    before = cache(model, tokens)
    after = cache(model, tokens, [zero_output_slice(layer, head, d_head)])
    out = f"blocks.{layer}.hook_attn_out"
    dims = list(range(d_head * head, d_head * (head + 1)))
    others = [d for d in range(model.cfg.d_model) if d not in dims]
    assert torch.all(after[out][..., dims] == 0) and not torch.all(before[out][..., dims] == 0)
    assert torch.equal(after[out][..., others], before[out][..., others])
    # every head's z is untouched in that block: it is not a head ablation
    assert torch.equal(after[f"blocks.{layer}.attn.hook_z"], before[f"blocks.{layer}.attn.hook_z"])
    # the residual after the attention moves only in those dims
    mid = f"blocks.{layer}.hook_resid_mid"
    assert torch.equal(after[mid][..., others], before[mid][..., others])


@pytest.mark.parametrize("how", ["zero", "mean"])
def test_per_row_ablation_equals_one_ablation_per_row(how):
    model = mi.load_model("random:llama-tiny", device="cpu", fast_paths=True)
    tokens = texts(model, 2, 24)
    layer = 1
    means = HeadMeans.measure_all(model, texts(model, 6, 24)[2:].split(2), [layer])[layer] if how == "mean" else None
    rows = torch.tensor([2, 2, -1, -1, 0, 0])  # three copies of the 2 sequences: head 2, nothing, head 0
    stacked = tokens.repeat(3, 1)
    with torch.inference_mode(), model.hooks(fwd_hooks=[ablate_head_per_row(layer, rows, how, means).as_hook()]):
        together = model(stacked)
    with torch.inference_mode():
        for group, head in enumerate((2, None, 0)):
            hooks = [] if head is None else [ablate_head(layer, head, how, means).as_hook()]
            with model.hooks(fwd_hooks=hooks):
                alone = model(tokens)
            torch.testing.assert_close(together[2 * group:2 * group + 2], alone, rtol=1e-5, atol=1e-5)


def test_unknown_ablation_is_refused():
    with pytest.raises(mi.UsageError, match="unknown head ablation 'drop': expected one of zero, mean"):
        ablate_heads([(0, 0)], "drop")


# --- attribution -----------------------------------------------------------------------------------

def _closure_ok(writes, layers, tol=1e-4):
    for layer in layers:
        scale = writes.resid_post[layer].abs().clamp(min=1.0)
        assert (writes.closure(layer).abs() / scale).max() < tol, (layer, writes.closure(layer))


@pytest.mark.parametrize("name", ["random:gpt2-tiny", "random:llama-tiny"])
@pytest.mark.parametrize("fast", [True, False])
def test_direct_writes_add_up_to_the_residual(name, fast):
    """Embeddings + every head's z @ W_O + b_O + every MLP output = resid_post, at every block, for
    arbitrary entries (learned positions and biases in GPT-2; rotary, GQA and gated MLPs in LLaMA)."""
    model = mi.load_model(name, device="cpu", fast_paths=fast)
    tokens = texts(model, 2, 20)
    entries = torch.tensor([[0, 0, 3], [1, 7, 11], [0, 19, 63], [1, 0, 0]])
    writes = direct_writes(model, tokens, entries, layout=PLAIN)
    _closure_ok(writes, range(model.cfg.n_layers))
    with torch.inference_mode():
        _, full = model.run_with_cache(tokens)
    for e, (b, p, d) in enumerate(entries.tolist()):
        assert writes.resid_post[:, e].tolist() == pytest.approx(
            [full[resid_post(li)][b, p, d].item() for li in range(model.cfg.n_layers)], rel=1e-6, abs=1e-6)
        head = writes.components.index[writes.components["component"] == "L1H2"][0]
        with torch.no_grad():
            expected = full["blocks.1.attn.hook_z"][b, p, 2] @ model.blocks[1].attn.W_O[2][:, d]
        assert writes.writes[e, head].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_attribution_names_the_planted_mlp_neuron(planted):
    _, model, token_id = planted
    tokens = encode(model.tokenizer, PLANT_PROMPT)[None]
    dots = (tokens[0] == token_id).nonzero().flatten().tolist()
    entries = torch.tensor([[0, p, PLANT_DIM] for p in dots])
    writes = direct_writes(model, tokens, entries, layout=PLAIN)
    _closure_ok(writes, range(PLANT_LAYER, model.cfg.n_layers))
    table = writes.table([PLANT_LAYER])
    for p in dots:
        rows = table[table["position"] == p]
        top = rows.loc[rows["write"].abs().idxmax()]
        assert top["component"] == f"mlp {PLANT_LAYER}" and top["share_of_value"] > 0.99
    drill = neuron_writes(model, tokens, PLANT_LAYER, (0, dots[0], PLANT_DIM))
    assert drill.neurons["neuron"].iloc[0] == 0 and drill.neurons["share_of_mlp_write"].iloc[0] > 0.99
    assert drill.neurons["write"].sum() + drill.b_out == pytest.approx(drill.mlp_out, rel=1e-5)
    inputs = drill.input_weights[drill.input_weights["neuron"] == 0]
    assert inputs["input_index"].iloc[0] == MARKER_DIM  # the planted neuron reads the marker dim
    # zeroing that neuron, or that one W_out weight, removes the value; its write is all there was
    for edit in (ZeroNeuron(PLANT_LAYER, 0), None):
        context = zeroed_weights(model.blocks[PLANT_LAYER].mlp.W_out, [(0, PLANT_DIM)]) if edit is None else _nothing()
        with context, torch.inference_mode(), model.hooks(fwd_hooks=[edit.as_hook()] if edit else []):
            _, after = model.run_with_cache(tokens, names_filter=resid_post(PLANT_LAYER))
        assert after[resid_post(PLANT_LAYER)][0, dots[0], PLANT_DIM].abs() < 5
    assert model.blocks[PLANT_LAYER].mlp.W_out[0, PLANT_DIM].item() != 0  # restored


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_attribution_names_a_planted_head():
    """Head 1.2 made to write 500 into dim 9 at every position (W_V = 0, b_V = e_0, W_O[0, 9] = 500)."""
    model = mi.load_model("random:gpt2-tiny", device="cpu", fast_paths=True)
    attn = model.blocks[1].attn
    with torch.no_grad():
        attn.W_V[2].zero_()
        attn.b_V[2].zero_()
        attn.b_V[2, 0] = 1.0
        attn.W_O[2, 0].zero_()
        attn.W_O[2, 0, 9] = 500.0
    tokens = texts(model, 1, 16)
    entries = torch.tensor([[0, p, 9] for p in (0, 5, 15)])
    writes = direct_writes(model, tokens, entries, layout=PLAIN)
    _closure_ok(writes, range(1, model.cfg.n_layers))
    table = writes.table([1])
    for _, rows in table.groupby("position"):
        top = rows.loc[rows["write"].abs().idxmax()]
        assert top["component"] == "L1H2" and top["write"] == pytest.approx(500.0, rel=1e-5)


def test_attribution_and_labels_place_the_prefix_of_a_sink_checkpoint(tmp_path):
    """The sink model's residual position 0 is its learned prefix (its layout from hooked_config.json): labelled
    <prefix>, written by the 'prefix' component alone, and the token positions after it by the embeddings."""
    model, layout = trainer_checkpoint(tmp_path, "sink")
    assert layout.n_prefix_tokens == 1
    tokens = encode(model.tokenizer, "The cat sat.")[None]
    labels = residual_tokens(model.tokenizer, tokens[0], layout=layout)
    assert labels == ["<prefix>"] + [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
    entries = torch.tensor([[0, 0, 5], [0, 3, 7]])  # the prefix, and the token at position 2 of the input
    writes = direct_writes(model, tokens, entries, layout=layout)
    _closure_ok(writes, range(model.cfg.n_layers))
    kinds = writes.components["kind"].tolist()
    with torch.inference_mode():
        _, full = model.run_with_cache(tokens)
    prefix, embed = kinds.index("prefix"), kinds.index("embed")
    assert writes.writes[0, prefix].item() == pytest.approx(model.prefix.W_prefix[0, 5].item(), rel=1e-6)
    assert writes.writes[0, embed].item() == 0 and writes.writes[1, prefix].item() == 0
    assert writes.writes[1, embed].item() == pytest.approx(full["hook_embed"][0, 2, 7].item(), rel=1e-6)
    assert writes.resid_post[:, 0].tolist() == pytest.approx(
        [full[resid_post(li)][0, 0, 5].item() for li in range(model.cfg.n_layers)], rel=1e-6)


# --- the fast sweep ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,how,per_forward", [("planted:gpt2-tiny", "zero", 0), ("planted:gpt2-tiny", "mean", 3),
                                                   ("random:llama-tiny", "zero", 3)])
def test_fast_sweep_equals_the_naive_loop(name, how, per_forward):
    model = mi.load_model(name, device="cpu", fast_paths=True)
    tokens = encode(model.tokenizer, PLANT_PROMPT)[None].repeat(2, 1)
    tokens[1, :3] = tokens[1, 3:6]  # two different sequences
    means = HeadMeans.measure_all(model, texts(model, 4, tokens.shape[1]).split(2), range(model.cfg.n_layers)) if how == "mean" else None
    criterion = MassiveCriterion() if name.startswith("planted") else LOOSE
    naive = naive_sweep(model, tokens, 2, criterion, how, means)
    fast = fast_sweep(model, tokens, 2, criterion, how, means, heads_per_forward=per_forward, layout=PLAIN)
    assert len(fast.entries) > 0 and torch.equal(fast.entries, naive.entries)
    assert fast.heads == naive.heads
    torch.testing.assert_close(fast.values, naive.values, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast.top1, naive.top1, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast.nll, naive.nll, rtol=1e-5, atol=1e-4)
    assert not torch.equal(fast.nll, fast.nll[:1].expand_as(fast.nll))  # the heads do differ


# --- scores and spread --------------------------------------------------------------------------------

def test_slots_are_reported_apart_and_never_as_token_0():
    """A layout's n_key_slots key columns in front of the positions."""
    tokens = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]]])  # [batch, head, query, pos]
    slot = torch.tensor([[[[0.5], [0.2], [0.0]]]])
    with_slot = torch.cat([slot, tokens * (1 - slot)], dim=-1)  # each row still sums to 1
    assert torch.equal(token_keys(with_slot, 1), tokens * (1 - slot))
    assert slot_attention(with_slot, 1).tolist() == pytest.approx([0.7 / 3])
    assert slot_attention(tokens, 0).tolist() == [0.0]
    massive = torch.tensor([[True, False, False]])
    # slot columns dropped: position 0 gets (0.5*0.8 + 0.2*1.0) / 2 from queries 1, 2, not the slot's 0.5
    assert massive_set_score(token_keys(with_slot, 1), massive).tolist() == pytest.approx([(0.4 + 0.2) / 2])


def test_bootstrap_ci_and_std():
    values = torch.tensor([[1.0, float("nan")], [2.0, 5.0], [3.0, 7.0], [10.0, float("nan")]])
    lo, hi = bootstrap_ci(values, n_boot=2000, seed=1)
    assert (lo <= values.nanmean(0)).all() and (values.nanmean(0) <= hi).all()
    assert lo[0] >= 1.0 and hi[0] <= 10.0 and lo[1] >= 5.0 and hi[1] <= 7.0
    assert torch.equal(bootstrap_ci(values, seed=1)[0], bootstrap_ci(values, seed=1)[0])  # seeded
    assert nan_std(values).tolist() == pytest.approx([values[:, 0].std().item(), math.sqrt(2)])
    assert math.isnan(nan_std(torch.tensor([[1.0], [float("nan")]])).item())


def test_head_scores_match_a_hand_computation_on_the_pattern():
    model = mi.load_model("planted:gpt2-tiny", device="cpu")
    seqs = encode(model.tokenizer, PLANT_PROMPT)[None]
    scores = head_scores(model, seqs, MassiveCriterion(), layout=PLAIN)
    with torch.inference_mode():
        _, full = model.run_with_cache(seqs)
    layer = PLANT_LAYER + 1  # the first block whose input holds the planted entries
    massive = (full[f"blocks.{layer}.hook_resid_pre"][0].abs() > 100).any(-1)
    pattern = full[f"blocks.{layer}.attn.hook_pattern"][0]  # [head, query, key]
    keys = [k for k in range(len(massive)) if massive[k]]
    for h in range(model.cfg.n_heads):
        sums = [sum(pattern[h, q, k].item() for k in keys if k < q) for q in range(pattern.shape[1]) if any(k < q for k in keys)]
        assert scores.massive[0, layer, h].item() == pytest.approx(sum(sums) / len(sums), rel=1e-5)
        assert scores.first[0, layer, h].item() == pytest.approx(pattern[h, 1:, 0].mean().item(), rel=1e-5)
    assert torch.isnan(scores.massive[0, : PLANT_LAYER + 1]).all()  # no massive input before
    sets = scores.head_sets(2, 2, 0, "massive")
    assert set(sets["set"]) == {"top", "bottom", "random"} and len(sets) == 8
    with pytest.raises(mi.UsageError, match="k 99 is larger than the number of heads"):
        scores.head_sets(99, 1, 0, "massive")


# --- experiments and the command line ------------------------------------------------------------------

def test_experiments_run_on_the_planted_model(planted, tmp_path):
    _, model, _ = planted
    options = RunOptions(device="cpu")
    sets = head_scores(model, texts(model, 3, 32), MassiveCriterion(), layout=PLAIN).head_sets(3, 1, 0, "first")
    sets.to_csv(tmp_path / "head_sets.csv", index=False)  # as head-scores writes it
    results = {}
    for name, params in (("attribution", {"n_seqs": 2, "n_random": 1}), ("head_3d", {"how": "residual_slice"}),
                         ("head_sweep", {"n_seqs": 1, "seq_len": 40}),
                         ("head_ablation", {"n_seqs": 3, "seq_len": 32, "n_boot": 50,
                                            "head_sets": str(tmp_path / "head_sets.csv")})):
        experiment = get_experiment(name)
        results[name] = experiment.fn(ModelContext(model, options), experiment.make_config(params))
    attribution = results["attribution"]
    assert attribution.summary["writing_mlp"] == PLANT_LAYER and attribution.summary["top_neuron"] == 0
    edits = attribution.tables["edits"].set_index("edit")
    assert edits.loc[f"top neuron {PLANT_LAYER}.0", "massive_change_pct"] < -99
    assert edits.filter(like="random neuron", axis=0)["massive_change_pct"].abs().max() < 1
    assert "writers mlp 2" in "\n".join(attribution.lines)
    before_after = results["head_3d"].tables["massive_entries"]
    assert not before_after.empty
    sweep = results["head_sweep"].tables["sweep_heads"]
    assert len(sweep) == 2 * model.cfg.n_layers * model.cfg.n_heads
    later = sweep[(sweep["layer"] > PLANT_LAYER) & (sweep["input"] == "prompt")]
    assert (later["massive_change_pct"] == 0).all()  # causal: later heads cannot move block 2
    ablation = results["head_ablation"]
    ppl = ablation.tables["perplexity"].set_index("condition")
    assert {"top-3", "bottom-3", "random-3 #0", "top_residual_slice-3"} <= set(ppl.index)
    assert ppl.loc["top-3", "heads"] == " ".join(f"L{r.layer}H{r.head}" for r in sets[sets["set"] == "top"].itertuples())
    assert isinstance(ablation.tables["entry_changes"], pd.DataFrame)


@pytest.mark.parametrize("args,needle", [
    (["head-3d", "--heads", "5.x"], "head '5.x' is not allowed: expected LxHy"),
    (["head-ablation", "--how", "prune"], "unknown --how 'prune': expected one of zero, mean"),
    (["head-sweep", "--layer", "7"], "layer 7 out of range"),
    (["head-scores", "--rank-by", "size"], "unknown --rank-by 'size': expected one of massive, first"),
    (["head-cumulative", "--max-heads", "0"], "--max-heads 0 is not allowed"),
    (["head-ablation", "--head-sets", "no/such.csv"], "--head-sets 'no/such.csv' does not exist"),
])
def test_bad_input_is_refused_before_the_model_loads(args, needle, tmp_path, capsys, monkeypatch):
    from mech_interp.models.language_study import LanguageModelStudy

    monkeypatch.setattr(LanguageModelStudy, "open", lambda self, run: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    code, _, err = run_cli([*args, "--model", "random:gpt2-tiny", "--out", out], capsys)
    assert_refused(code, err, needle, out)


@pytest.mark.parametrize("args,needle", [
    (["head-3d", "--heads", "1.7"], "head L1H7 is out of range for random-gpt2-tiny: expected LAYER 0..3 and HEAD 0..3"),
    (["head-scores", "--k", "99", "--rank-by", "first"], "k 99 is larger than the number of heads with a first score (16)"),
])
def test_bad_heads_are_refused_once_the_model_says_how_many(args, needle, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli([*args, "--model", "random:gpt2-tiny", "--out", out], capsys)
    assert_refused(code, err, needle, out)


class _Pieces:
    """The run writer's piece store, in memory; ``stop_after`` pieces saved, it interrupts like a kill."""

    def __init__(self, stop_after=None):
        self.saved, self.stop_after, self.loaded = {}, stop_after, 0

    def load_piece(self, key):
        value = self.saved.get(repr(sorted(key.items())))
        self.loaded += value is not None
        return value

    def save_piece(self, key, value):
        self.saved[repr(sorted(key.items()))] = value
        if self.stop_after is not None and len(self.saved) >= self.stop_after:
            raise KeyboardInterrupt


def test_fast_sweep_resumes_after_an_interruption(planted):
    _, model, _ = planted
    tokens = encode(model.tokenizer, PLANT_PROMPT)[None]
    whole = fast_sweep(model, tokens, 2, MassiveCriterion(), layout=PLAIN)
    pieces = _Pieces(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        fast_sweep(model, tokens, 2, MassiveCriterion(), pieces=pieces, layout=PLAIN)
    pieces.stop_after = None
    resumed = fast_sweep(model, tokens, 2, MassiveCriterion(), pieces=pieces, layout=PLAIN)
    assert pieces.loaded == 2 and len(pieces.saved) == model.cfg.n_layers
    for name in ("values", "top1", "nll"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name))


def test_heads_are_named_LxHy_and_the_older_spelling_reads_the_same():
    from mech_interp.core.head_names import head_name, head_names
    from mech_interp.studies.heads.named_heads import parse_head_list

    assert parse_head_list("L18H8, 5.1,l0h0") == [(18, 8), (5, 1), (0, 0)]
    assert head_name(18, 8) == "L18H8" and head_names([(5, 1), (6, 1)]) == "L5H1 L6H1"
    assert all(parse_head_list(head_name(li, h)) == [(li, h)] for li in (0, 7, 31) for h in (0, 12))
