"""The library's face (``import mech_interp as mi``): every name the package docstring lists is there, and the example
in each one's docstring runs as written (doctest), on tiny registered models."""

from __future__ import annotations

import doctest

import pytest

import mech_interp as mi

FACE = ("load_model", "load_text", "windows", "layer_stats", "interventions", "perplexity", "run")
# Lines a run prints for the user on its way, not results: TransformerLens' device line, the placement line.
INFO = ("Moving model to device:", "[placement] ")


class _ResultsOnly(doctest.OutputChecker):
    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        got = "".join(line for line in got.splitlines(keepends=True) if not line.startswith(INFO))
        return super().check_output(want, got, optionflags)


def test_the_face_is_what_the_package_says():
    assert set(FACE) <= set(mi.__all__)
    for name in FACE:
        assert f"mi.{name}" in mi.__doc__, f"the package docstring lists mi.{name}"
    assert {"set_zero", "set_mean", "ablate_head", "ablate_heads"} <= set(mi.interventions.__all__)


@pytest.mark.parametrize("name", FACE)
def test_each_docstring_example_runs(name):
    """Integration tier: each example loads a tiny registered model (load_model), so it is timed with the others."""
    obj = getattr(mi, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f"mi.{name} has a docstring example"
    runner = doctest.DocTestRunner(checker=_ResultsOnly(), optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in examples:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"mi.{name}'s example failed (doctest output above)"
    mi.load_model  # noqa: B018  (names a model loader, so the tier rules count this test as integration)


@pytest.mark.parametrize("notebook", ["01_massive_activations.ipynb", "02_attention_heads.ipynb"])
def test_the_language_model_notebooks_use_only_the_face(notebook):
    """They import ``mech_interp as mi`` and nothing from inside the package (the notebook tests execute them)."""
    import json
    from pathlib import Path

    cells = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / notebook).read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "import mech_interp as mi" in code
    deep = [line for line in code.splitlines() if "from mech_interp" in line or "import mech_interp." in line]
    assert not deep, deep


def test_mi_run_refuses_what_it_cannot_run_in_one_line():
    """A setting neither the experiment nor its study takes, and an experiment no study has: one line naming the bad
    name and the accepted ones, before any model loads."""
    with pytest.raises(mi.UsageError, match=r"unknown setting 'nseqs' for experiment 'layerwise': accepted .*n_seqs"):
        mi.run("layerwise", "random:gpt2-tiny", nseqs=2)
    with pytest.raises(mi.UsageError, match=r"unknown experiment 'layerwize': expected one of feature_view, layerwise"):
        mi.run("layerwize", "random:gpt2-tiny")
    with pytest.raises(mi.UsageError, match=r"--n-seqs 0 is not allowed|n_seqs"):
        mi.run("layerwise", "random:gpt2-tiny", n_seqs=0)
