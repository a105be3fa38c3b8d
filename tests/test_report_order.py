"""The order of the runs on a model page (``mech_interp.report.page_order``): the paper's, from the
study registries, on runs described by their manifests alone (no model, no files)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mech_interp.report.discovery import Run
from mech_interp.report.page_order import PAPER_ORDER, experiment_order, in_paper_order
from mech_interp.runs.studies import STUDIES, get_study


def _run(name: str, experiment: str | None = None, study: str | None = None) -> Run:
    manifest = {k: v for k, v in (("experiment", experiment), ("study", study)) if v is not None}
    return Run(Path("/results/m") / name, f"m/{name}", "m", manifest, fields=manifest)


@pytest.mark.unit
def test_the_order_is_the_papers_then_each_registry_order():
    order = experiment_order()
    assert order[:4] == (("lm", "layerwise"), ("lm", "feature_view"), ("lm", "intervention"), ("lm", "attention"))
    assert [s for s, _ in order] == sorted((s for s, _ in order), key=list(STUDIES).index)  # study by study
    for name in STUDIES:
        study = get_study(name)
        listed = [e for s, e in order if s == name]
        assert sorted(listed) == sorted(study.experiments)  # every experiment, once
        if name not in PAPER_ORDER:
            assert listed[:len(study.default_runs)] == list(study.default_runs)  # as the study runs them


@pytest.mark.unit
def test_runs_are_shown_in_the_papers_order():
    expected = [
        _run("layerwise", "layerwise", "lm"),  # where massive activations appear (Fig. 2), default settings first
        _run("layerwise__n_seqs=2", "layerwise", "lm"),
        _run("old_layerwise", "layerwise"),  # a manifest naming no study: the first study with its experiment
        _run("feature_view", "feature_view", "lm"),  # what they are (Fig. 1)
        _run("intervention__layer=2", "intervention", "lm"),  # removing them (Table 3)
        _run("attention", "attention", "lm"),  # who attends to them (Fig. 6)
        _run("head_scores", "head_scores", "heads"),
        _run("head_ablation", "head_ablation", "heads"),
        _run("head_3d", "head_3d", "heads"),
        _run("vit_feature_view", "feature_view", "vit"),  # the vision study's, in its order
        _run("vit_layerwise", "layerwise", "vit"),
        _run("register_means", "register_means", "vit"),
        _run("comparison", "comparison", "trainer"),
        _run("attn_bias"),  # a training run: no experiment, unknown to the registries; then alphabetically
        _run("nothing", "layerwise", "nostudy"),  # a study no registry knows
        _run("zzz", "zzz_custom"),
    ]
    for seed in range(3):
        shuffled = expected[:]
        random.Random(seed).shuffle(shuffled)
        assert [r.name for r in in_paper_order(shuffled)] == [r.name for r in expected]
