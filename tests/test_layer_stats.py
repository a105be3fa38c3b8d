"""Streaming statistics equal direct computation on cached activations; planted activations are found."""

from __future__ import annotations

import math

import pytest
import torch

import mech_interp as mi
from mech_interp.core.criterion import MassiveCriterion, massive_mask
from mech_interp.core.dtype_range import ActivationRangeError
from mech_interp.core.order_statistics import at_least, order_statistics
from mech_interp.core.recorder import ActivationRecorder, TopKTooLarge
from mech_interp.core.running_stats import Mean, TopK
from mech_interp.data.texts import load_text
from mech_interp.data.tokens import encode, windows
from mech_interp.metrics.layer_stats import PREFIX_LABEL, PREFIX_NAME, collect_layer_stats
from mech_interp.metrics.perplexity import perplexity
from mech_interp.models.context import ModelContext
from mech_interp.models.hook_names import resid_post
from mech_interp.models.run_options import RunOptions

from .conftest import PLANT_DIM, PLANT_LAYER, PLANT_PROMPT
from .test_attention import trainer_checkpoint


def test_mean_and_topk_stream_like_the_whole():
    torch.manual_seed(0)
    data = torch.randn(100, 3)
    mean = Mean()
    for chunk in data.split(7):
        mean.add(chunk)
    torch.testing.assert_close(mean.mean(), data.double().mean(0))
    torch.testing.assert_close(mean.std(), data.double().std(0, unbiased=False))
    scores = torch.rand(1000)
    top = TopK(5, n_meta=1)
    for chunk, idx in zip(scores.split(64), torch.arange(1000).split(64)):
        top.add(chunk, -chunk, idx[:, None])
    expected = scores.double().topk(5)
    torch.testing.assert_close(top.scores, expected.values)
    assert top.meta[:, 0].tolist() == expected.indices.tolist()
    torch.testing.assert_close(top.values, -expected.values)


@pytest.mark.parametrize("pos, d", [(1, 1), (1, 2), (5, 1), (2, 3), (1, 577), (577, 1), (3, 200), (512, 586)])
def test_order_statistics_equal_torch(pos, d):
    n = pos * d
    torch.manual_seed(n)
    k = min(3, n)
    shape = (4, pos, d)
    heavy = torch.randn(shape).abs() * 10 ** torch.randint(-6, 5, shape).float()  # spans many magnitudes
    ties = torch.randint(0, 3, shape).float()
    peaked = torch.rand(shape)
    peaked[:, 0] = 2  # one row of tied peaks: the k largest all in one position
    special = torch.rand(shape)
    special[1].view(-1)[n // 2] = float("inf")
    special[2, 0, 0] = float("nan")  # sequences with inf/nan take torch's path and get its semantics
    for mag in (torch.rand(shape), heavy, ties, peaked, torch.zeros(shape), special, heavy.half()):
        top, median = order_statistics(mag, k)
        flat = mag.flatten(1)
        torch.testing.assert_close(top, flat.topk(k, dim=1).values, equal_nan=True, rtol=0, atol=0)
        torch.testing.assert_close(median, flat.median(dim=1).values, equal_nan=True, rtol=0, atol=0)
        bound = torch.stack([flat[0].min(), flat[1].median(), top[2, -1], torch.tensor(1e9)]).float()
        seq, index = at_least(mag, bound)
        expected = (flat >= bound[:, None].to(flat.dtype)).nonzero(as_tuple=True)
        assert seq.tolist() == expected[0].tolist() and index.tolist() == expected[1].tolist()
    with pytest.raises(ValueError, match="k must be in 1..%d" % n):
        order_statistics(torch.rand(2, pos, d), n + 1)


def test_wrong_shapes_fail_their_annotations():
    """jaxtyping annotations are checked at test time: a 2-D tensor is not ``[batch, pos, d]``."""
    import jaxtyping

    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'mag'"):
        order_statistics(torch.rand(10, 4), 1)
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'labels'"):
        ActivationRecorder(["h"]).record("h", torch.rand(2, 4, 8), torch.zeros(2, 5, dtype=torch.long))  # 5 positions, not 4


def test_torch_path_of_order_statistics_agrees(monkeypatch):
    """GPUs take torch's kernels; run that path here on the CPU and compare with the numpy one."""
    import mech_interp.core.order_statistics as order

    torch.manual_seed(0)
    mag = torch.randn(3, 50, 100).abs() * 10 ** torch.randint(-3, 4, (3, 50, 100)).float()
    bound = torch.tensor([1.0, 50.0, 1e9])
    expected = order.order_statistics(mag, 4), order.at_least(mag, bound)
    monkeypatch.setattr(order, "_on_numpy", lambda t: False)
    got = order.order_statistics(mag, 4), order.at_least(mag, bound)
    for e, g in zip([*expected[0], *expected[1]], [*got[0], *got[1]]):
        assert torch.equal(e, g)
    assert got[1][0].dtype == torch.long and len(got[1][0]) == int((mag.flatten(1) >= bound[:, None]).sum())


def test_recorder_keeps_k_entries_per_sequence_on_ties():
    """Tied maxima must not crowd other sequences out of the top entries, nor count twice."""
    acts = torch.rand(2, 4, 8)
    acts[0, :, :] = 7.0  # sequence 0: 32 tied maxima
    acts[1, 3, 5] = -500.0  # sequence 1: one massive entry, ~1000x its median
    recorder = ActivationRecorder(["h"], k=3, criterion=MassiveCriterion(min_abs=100, min_ratio=100))
    recorder.record("h", acts, torch.arange(8).reshape(2, 4))
    stats = recorder.result()
    top = stats.top_entries
    assert top.groupby("sequence").size().to_dict() == {0: 3, 1: 3}
    assert top.iloc[0][["sequence", "position", "dim", "value"]].tolist() == [1, 3, 5, -500.0]
    mag = acts.abs().flatten(1)
    row = stats.summary.iloc[0]
    assert row["top1"] == pytest.approx(mag.topk(3, dim=1).values[:, 0].mean().item())
    assert row["median"] == pytest.approx(mag.median(dim=1).values.mean().item())
    assert stats.massive[["position", "dim", "count"]].values.tolist() == [[3, 5, 1]]
    assert row["seq_fraction_with_massive"] == 0.5


@pytest.mark.parametrize("batch_size", [1, 3])
def test_layer_stats_equal_direct_computation(batch_size):
    model = mi.load_model("random:llama-tiny", device="cpu")
    seqs = windows(model.tokenizer, load_text("builtin").text, 64, 6)
    stats = collect_layer_stats(model, seqs.split(batch_size), k=3, progress=False)
    with torch.inference_mode():
        _, cache = model.run_with_cache(seqs)
    for layer in range(model.cfg.n_layers):
        mag = cache[resid_post(layer)].abs().flatten(1)  # [seq, pos*d]
        row = stats.summary.iloc[layer]
        top = mag.topk(3, dim=1).values.mean(0)
        assert row["top1"] == pytest.approx(top[0].item(), rel=1e-5)
        assert row["top3"] == pytest.approx(top[2].item(), rel=1e-5)
        assert row["median"] == pytest.approx(mag.median(dim=1).values.mean().item(), rel=1e-5)
        assert row["mean_abs"] == pytest.approx(mag.mean().item(), rel=1e-5)
        best = stats.top_entries[stats.top_entries["layer"] == layer].iloc[0]
        acts = cache[resid_post(layer)]
        assert abs(acts[best["sequence"], best["position"], best["dim"]].item()) == pytest.approx(mag.max().item(), rel=1e-6)
        assert best["token_id"] == seqs[best["sequence"], best["position"]].item()
    assert stats.n_sequences == 6


def test_per_head_hook_points_report_head_major_dims():
    model = mi.load_model("random:gpt2-tiny", device="cpu")
    seqs = windows(model.tokenizer, load_text("builtin").text, 32, 2)
    name = "blocks.1.attn.hook_z"
    stats = collect_layer_stats(model, [seqs], hook_names=[name], k=2, progress=False)
    with torch.inference_mode():
        _, cache = model.run_with_cache(seqs, names_filter=name)
    z = cache[name]  # [batch, pos, head, d_head]
    best = stats.top_entries.iloc[0]
    head, i = divmod(int(best["dim"]), model.cfg.d_head)
    assert abs(z[best["sequence"], best["position"], head, i].item()) == pytest.approx(z.abs().max().item(), rel=1e-6)
    assert stats.summary.iloc[0]["median"] == pytest.approx(z.abs().flatten(1).median(dim=1).values.mean().item(), rel=1e-6)


def test_planted_massive_activation_is_found_at_its_place(planted):
    hf, model, token_id = planted
    tokens = encode(hf.tokenizer, PLANT_PROMPT)
    positions = (tokens == token_id).nonzero().flatten().tolist()
    assert len(positions) == 2
    stats = collect_layer_stats(model, [tokens[None]], progress=False)
    massive = stats.massive
    assert stats.first_massive_layer() == PLANT_LAYER
    assert set(massive["layer"]) == set(range(PLANT_LAYER, model.cfg.n_layers))
    at_plant = massive[massive["layer"] == PLANT_LAYER]
    assert sorted(at_plant["position"]) == positions
    assert set(at_plant["dim"]) == {PLANT_DIM}
    assert set(at_plant["token"]) == {"."}
    assert at_plant["mean_abs"].min() > 1000
    # Below the plant nothing is massive, and the summary says so.
    assert (stats.summary.loc[stats.summary["layer"] < PLANT_LAYER, "seq_fraction_with_massive"] == 0).all()


def test_criterion_thresholds():
    acts = torch.full((1, 4, 10), 0.5)
    acts[0, 2, 3] = 600.0  # 1200x the median
    acts[0, 1, 1] = 90.0  # large ratio, below min_abs
    mask = massive_mask(acts, MassiveCriterion(min_abs=100, min_ratio=1000))
    assert mask.nonzero().tolist() == [[0, 2, 3]]
    assert massive_mask(acts, MassiveCriterion(min_abs=100, min_ratio=2000)).sum() == 0
    # Boundaries as stated: |a| > min_abs (strict), |a| >= min_ratio x median (inclusive).
    acts[0, 0, 0], acts[0, 3, 9] = 500.0, 100.0  # exactly 1000x the median; exactly min_abs (200x)
    criterion = MassiveCriterion(min_abs=100, min_ratio=1000)
    assert massive_mask(acts, criterion).nonzero().tolist() == [[0, 0, 0], [0, 2, 3]]
    recorder = ActivationRecorder(["h"], k=1, criterion=criterion)
    recorder.record("h", acts, torch.zeros(1, 4, dtype=torch.long))
    assert recorder.result().massive[["position", "dim"]].values.tolist() == [[0, 0], [2, 3]]
    for bad in ({"min_abs": -1}, {"min_abs": float("nan")}, {"min_ratio": 0}, {"min_ratio": float("inf")}):
        with pytest.raises(ValueError, match="criterion needs finite"):
            MassiveCriterion(**bad)


def test_float16_overflow_is_refused(planted):
    from mech_interp.models.conversion import hooked_from_hf

    from .conftest import plant_massive_activation

    hf, _, token_id = planted
    plant_massive_activation(hf, token_id, scale=2e4)  # ~4e5 > float16 max 65504
    model = hooked_from_hf(hf, torch.device("cpu"), torch.float16)
    tokens = encode(hf.tokenizer, PLANT_PROMPT)[None]
    with pytest.raises(ActivationRangeError, match="overflowed torch.float16"):
        collect_layer_stats(model, [tokens], progress=False)
    # A perplexity pass hooks no statistics but must refuse the overflow too, not report a number.
    with pytest.raises(ActivationRangeError, match="overflowed torch.float16"):
        perplexity(model, tokens, progress=False)


def test_float16_near_its_limit_warns(planted):
    from mech_interp.models.conversion import hooked_from_hf

    from .conftest import plant_massive_activation

    hf, _, token_id = planted
    plant_massive_activation(hf, token_id, scale=1200)  # ~2.4e4: fits float16, within 4x of 65504
    model = hooked_from_hf(hf, torch.device("cpu"), torch.float16)
    tokens = encode(hf.tokenizer, PLANT_PROMPT)[None]
    with pytest.warns(UserWarning, match="within 4x of the torch.float16 limit"):
        stats = collect_layer_stats(model, [tokens], progress=False)
    assert stats.first_massive_layer() == PLANT_LAYER
    with pytest.warns(UserWarning, match="within 4x"):
        assert math.isfinite(perplexity(model, tokens, progress=False).value)


def test_mean_of_ratios_and_ratio_of_means_are_what_they_say():
    acts = torch.full((3, 2, 5), 1.0)
    acts[0, 0, 0], acts[1, 1, 4], acts[2, 0, 2] = 50.0, 300.0, 10.0  # top1 per sequence
    acts[1] *= 2  # sequence 1: median 2, top1 600
    recorder = ActivationRecorder(["h"], k=1)
    recorder.record("h", acts, torch.zeros(3, 2, dtype=torch.long))
    row = recorder.result().summary.iloc[0]
    top1, median = [50.0, 600.0, 10.0], [1.0, 2.0, 1.0]
    assert row["mean_ratio_top1_median"] == pytest.approx((50 / 1 + 600 / 2 + 10 / 1) / 3)  # 120
    assert row["ratio_of_means_top1_median"] == pytest.approx(sum(top1) / sum(median))  # 165
    assert row["top1"] == pytest.approx(sum(top1) / 3) and row["median"] == pytest.approx(sum(median) / 3)


def feature_view_experiment():
    from mech_interp.runs.studies import get_study

    return get_study("lm").experiment("feature_view")


def test_feature_view_reports_the_lower_median(planted):
    _, model, _ = planted
    experiment = feature_view_experiment()
    result = experiment.fn(ModelContext(model, RunOptions(device="cpu")),
                           experiment.make_config({"prompt": PLANT_PROMPT, "layer": PLANT_LAYER}))
    mag = result.tables["activations"]["abs"]
    assert len(mag) % 2 == 0  # an even count: the lower median and pandas' differ
    lower = torch.tensor(mag.values).median().item()
    assert result.summary["median_abs"] == pytest.approx(lower, rel=1e-6)
    assert result.summary["median_abs"] != pytest.approx(float(mag.median()), rel=1e-6)


def test_a_sink_checkpoint_labels_its_prefix_position(tmp_path):
    """Residual position 0 of the trainer's sink model is its learned prefix (the layout its hooked_config.json
    gives): the statistics label it so, every later position by the token there, and the feature view too."""
    model, layout = trainer_checkpoint(tmp_path, "sink")
    tokens = encode(model.tokenizer, "The cat sat.")
    everything = MassiveCriterion(min_abs=0.0, min_ratio=1e-9)  # every nonzero entry: every position shows up
    stats = collect_layer_stats(model, [tokens[None]], criterion=everything, progress=False, layout=layout)
    labels = stats.massive.drop_duplicates("position").set_index("position").sort_index()
    assert labels.index.tolist() == list(range(1 + len(tokens)))
    assert labels["token_id"].tolist() == [PREFIX_LABEL, *tokens.tolist()]
    assert labels["token"].tolist() == [PREFIX_NAME] + [model.tokenizer.decode([t]) for t in tokens.tolist()]
    experiment = feature_view_experiment()
    result = experiment.fn(ModelContext(model, RunOptions(device="cpu"), layout),
                           experiment.make_config({"prompt": "The cat sat.", "layer": 1}))
    assert result.summary["tokens"] == labels["token"].tolist()
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens[None], names_filter=resid_post(1))
    grid = result.tables["activations"]
    assert grid["value"].tolist() == cache[resid_post(1)][0].flatten().tolist()
    assert (grid.loc[grid["position"] == 0, "token"] == PREFIX_NAME).all()


def test_k_beyond_a_hidden_state_is_refused_naming_the_parameter():
    recorder = ActivationRecorder(["h"], k=9)
    with pytest.raises(TopKTooLarge, match="^k=9 is larger than the 8 entries of one hidden state at h$") as refused:
        recorder.record("h", torch.ones(1, 2, 4), torch.zeros(1, 2, dtype=torch.long))
    assert (refused.value.k, refused.value.n_entries, refused.value.site) == (9, 8, "h")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_detection_agrees_between_passes(planted, dtype):
    """The statistics pass, SetZero and SetMean decide "massive" at one precision (float32), so they
    pick the same entries even for criteria placed exactly on an entry's |a| / median."""
    from mech_interp.core.criterion import median_abs
    from mech_interp.interventions import MassiveMeans, SetMean, SetZero
    from mech_interp.models.conversion import hooked_from_hf

    hf, _, _ = planted
    model = hooked_from_hf(hf, torch.device("cpu"), dtype)
    tokens = encode(hf.tokenizer, PLANT_PROMPT)[None]
    site = resid_post(PLANT_LAYER + 1)
    seen = {}
    with torch.inference_mode(), model.hooks(fwd_hooks=[(site, lambda a, hook: seen.setdefault("acts", a.clone()))]):
        model(tokens, return_type=None)
    acts = seen["acts"]
    assert acts.dtype == dtype
    median = median_abs(acts)[0].item()
    top = acts.abs().float().flatten().topk(8).values.tolist()
    criteria = [MassiveCriterion(min_abs=1, min_ratio=v / median) for v in top]  # on the boundary of each entry
    criteria += [MassiveCriterion(min_abs=v, min_ratio=1) for v in top]  # |a| > min_abs is strict
    picked_sizes = set()
    for criterion in criteria:
        stats = collect_layer_stats(model, [tokens], hook_names=[site], criterion=criterion, progress=False)
        from_stats = sorted(map(tuple, stats.massive[["position", "dim"]].values.tolist()))
        zero = SetZero(site, criterion)
        zeroed = zero(acts)
        from_zero = sorted(map(tuple, ((zeroed == 0) & (acts != 0))[0].nonzero().tolist()))
        assert from_zero == from_stats and zero.counts["replaced"] == len(from_stats), criterion
        picked_sizes.add(len(from_stats))
        if from_stats:
            reset = SetMean(MassiveMeans.from_stats(stats, site), criterion)
            reset(acts)
            assert reset.counts == {"replaced": len(from_stats), "unmatched": 0}, criterion
    assert len(picked_sizes) > 2  # the criteria really cut between entries
