"""The findings the report reads from manifest summaries (``mech_interp.report.findings``): the
numbers of the head and vision studies' runs, each with the definition the run recorded, and no
failure on a summary of other types (edited by hand, written by another version). The language-model
runs' findings, read from their tables, are checked on real runs in ``test_report.py``."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mech_interp.metrics.relative_change import change_text
from mech_interp.report.discovery import Run
from mech_interp.report.findings import HEADS, READERS, findings
from mech_interp.report.manifest_fields import checked
from mech_interp.report.rounding import rounded

SINK = "share of heads whose mean attention to token 0, over the queries q > 0, exceeds eps (Gu et al. 2024)"
MASSIVE_SCORE = "per sequence: mean over queries q with at least one massive key k < q of the attention summed"
CUMULATIVE = "massive value = mean over sequences of the value at the clean run's massive entries"

# summaries shaped as the runs write them (SmolLM2-135M's head study, cut short)
SUMMARIES = {
    ("heads", "head_scores"): {
        "sink_eps": 0.3, "sink_head_share": 0.7888888716697693, "rank_by": "massive",
        "definitions": {"sink_share": SINK}, "ranked_by_definition": MASSIVE_SCORE,
        "head_sets": [{"set": "top", "draw": 0, "rank": 1, "layer": 18, "head": 7, "score": 0.9998762607574463},
                      {"set": "bottom", "draw": 0, "rank": 0, "layer": 12, "head": 1, "score": 0.15},
                      {"set": "top", "draw": 0, "rank": 0, "layer": 18, "head": 8, "score": 0.999997079372406},
                      {"set": "random", "draw": 1, "rank": 0, "layer": 21, "head": 4, "score": 0.6}]},
    ("heads", "head_ablation"): {
        "how": "zero", "massive_layers": [11, 12, 27], "definition": "change = ablated / clean - 1 per sequence",
        "perplexity": [{"condition": "clean", "heads": "", "perplexity": 27.176989653391935},
                       {"condition": "top-3", "heads": "L18H8 L18H7 L18H6", "perplexity": 26.74899666296388}]},
    ("heads", "head_cumulative"): {
        "measured_layer": 27, "definition": CUMULATIVE, "steps": [
            {"order": "top", "draw": 0, "k": 0, "massive_value": 21911.69921875, "perplexity": 27.176989653391935},
            {"order": "top", "draw": 0, "k": 1, "massive_value": 21912.6, "perplexity": 26.9},
            {"order": "top", "draw": 0, "k": 2, "massive_value": 21916.4, "perplexity": 26.698}]},
    ("heads", "attribution"): {
        "first_massive_layer": 11, "entry": [0, 0, 507], "writing_mlp": 10, "top_neuron": 1234,
        "max_abs_closure": 0.0023, "definitions": {"writer": "a component whose write ...", "neuron write": "post",
                                                   "closure": "resid_post value - sum of the writes"}},
    ("heads", "head_3d"): {"layer": 11, "heads": [[18, 8], [18, 7]], "how": "zero", "massive": [
        {"position": 0, "token": "<b>", "dim": 507, "before": 23456.7, "after": 23400.0, "change_pct": -0.24}]},
    ("lm", "feature_view"): {"layer": 11, "max_abs": 23456.7, "median_abs": 0.3, "tokens": ["The", " cat"],
                             "massive": [{"position": 0, "dim": 507, "value": -23456.7}]},
    ("vit", "layerwise"): {"first_massive_block": 1, "top1": [3.0, 500.0], "median": [1.0, 0.25],
                           "definitions": {"ratio_of_means_top1_median": "mean top1 / mean median"}},
    ("vit", "feature_view"): {"block": 1, "max_abs": 512.5, "median_abs": 0.5, "top_entry": {"role": "reg0", "dim": 3}},
}


def _run(key: tuple[str, str], summary) -> Run:
    """As the report reads it: a summary that is not an object is left out (``manifest_fields``)."""
    manifest = {"study": key[0], "experiment": key[1], "summary": summary}
    return Run(Path("/results/m") / key[1], f"m/{key[1]}", "m", manifest, fields=checked(manifest)[0])


def _found(key: tuple[str, str]) -> dict[str, tuple[str, str, bool]]:
    return {f.label: (f.value, f.definition, f.headline) for f in findings(_run(key, SUMMARIES[key]))}


@pytest.mark.unit
def test_head_findings_come_with_the_definitions_the_runs_recorded():
    scores = _found(("heads", "head_scores"))
    assert scores["sink share"] == ("0.7889 (eps 0.3)", SINK, False)
    value, definition, headline = scores["top heads by massive score"]
    assert value == "L18H8 (1), L18H7 (0.9999)" and headline  # the top set only, by rank
    assert definition == f"{HEADS}; in brackets its score: {MASSIVE_SCORE}"
    ablation = _found(("heads", "head_ablation"))
    assert ablation["blocks with massive entries"][0] == "11-27"
    assert ablation["perplexity, heads removed"][0] == (
        f"clean 27.18; top-3 (L18H8 L18H7 L18H6) 26.75 ({change_text(26.74899666296388, 27.176989653391935)})")
    cumulative = _found(("heads", "head_cumulative"))
    value, definition, _ = cumulative["top heads removed"]
    assert value == (f"after 2, block 27: massive value 21916 ({change_text(21916.4, 21911.69921875)}), "
                     f"perplexity 26.7 ({change_text(26.698, 27.176989653391935)})")
    assert definition.startswith(CUMULATIVE)
    attribution = _found(("heads", "attribution"))
    assert attribution["writing MLP"][0] == "block 10 to position 0 dim 507 (massive from block 11), top neuron 1234"
    assert attribution["largest |closure|"] == ("0.0023", "resid_post value - sum of the writes", False)
    before_after = _found(("heads", "head_3d"))
    assert before_after["massive entries, heads L18H8 L18H7 removed"][0] == (
        f"block 11: position 0 '<b>' dim 507: 23457 -> 23400 ({change_text(23400.0, 23456.7)})")


@pytest.mark.unit
def test_feature_view_findings_name_each_massive_activation():
    view = _found(("lm", "feature_view"))
    assert view["massive activations"][0] == "block 11: position 0 'The' dim 507 = -23457"
    assert view["largest |a|"][0] == "block 11: 23457 (median |a| 0.3)"
    vit = _found(("vit", "layerwise"))
    assert vit["first massive block"][0] == "1" and vit["top-1/median"][0] == "2000 (top-1 500, median 0.25)"
    none = findings(_run(("vit", "layerwise"), {**SUMMARIES[("vit", "layerwise")], "first_massive_block": None}))
    assert [(f.label, f.value) for f in none] == [("first massive block", "none")]
    assert findings(_run(("vit", "layerwise"), {"first_massive_block": "two"})) == []  # not what a run writes
    assert _found(("vit", "feature_view"))["largest |a|"][0] == "block 1: 512.5 at reg0 dim 3 (median |a| 0.5)"


JUNK = ("<script>alert(1)</script>", None, True, -1, 1e308, float("nan"), [], [None, "x", 5, {"a": []}], {"a": {}},
        [[1], [1, 2, 3]])


@pytest.mark.unit
@pytest.mark.parametrize("key", sorted(SUMMARIES))
def test_a_summary_of_other_types_gives_what_it_can_and_never_fails(key):
    good = SUMMARIES[key]
    cases = [junk for junk in JUNK] + [{k: junk} for k in good for junk in JUNK]
    for field in good:
        for junk in JUNK:  # one field replaced at a time, also inside each record of a list
            changed = copy.deepcopy(good)
            changed[field] = junk
            cases.append(changed)
            for i, record in enumerate(good[field] if isinstance(good[field], list) else []):
                for name in record if isinstance(record, dict) else []:
                    changed = copy.deepcopy(good)
                    changed[field][i][name] = junk
                    cases.append(changed)
    for summary in cases:
        for finding in READERS[key](_run(key, summary)):
            assert all(isinstance(text, str) for text in (finding.label, finding.value, finding.definition))


@pytest.mark.unit
def test_rounded_numbers_in_findings():
    assert rounded(0.7888888716697693) in _found(("heads", "head_scores"))["sink share"][0]
