"""Shared fixtures (tiny random-init models, a planted massive activation, the real SmolLM2) and the
test tiers.

Tiers (markers registered in pyproject.toml), assigned here at collection so that no test file
needs to name its own:

- ``acceptance``: uses the ``smollm2`` fixture (directly or through another fixture), lives in
  ``test_notebook.py``, or reads ``../shared/data`` through ``shared_data``;
- ``unit``: neither its code, nor the helpers and fixtures it calls, names a model loader or the CLI
  (see ``LOADS_A_MODEL``): it runs on plain tensors and configs;
- ``integration``: everything else (tiny random-init or planted models, CLI runs on them).

A tier marker written on a test wins. ``pytest -m unit`` takes seconds; ``make test`` runs all.

The jaxtyping annotations of the tensor packages (``TYPECHECKED``) are checked with beartype while
the tests run: a tensor whose shape or dtype contradicts its annotation fails the test. The import
hook is installed here, before anything imports ``mech_interp``. Not the whole package: its config
dataclasses (``RunOptions``, the experiment configs, ``ModelSpec``) accept any value on purpose and
refuse bad ones with a one-line ``UsageError``; beartype would refuse them first, with another
error, so the tests would check something users never see. (pytest's ``--jaxtyping-packages``
cannot name several packages with a configured typechecker: jaxtyping 0.3.11's plugin splits the
list wrongly when it contains a parenthesis.)
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import jaxtyping

TYPECHECKED = (
    "mech_interp.core", "mech_interp.metrics", "mech_interp.interventions", "mech_interp.data.tokens",
    "mech_interp.storage.tensor_files",
    *(f"mech_interp.studies.heads.{m}" for m in ("reduced_forward", "scores", "sweep", "inputs", "neuron_edits")),  # head study
    *(f"mech_interp.studies.followups.{m}" for m in ("down_proj_scan", "down_proj_edits", "scan_inputs", "emergence",
                                                       "sink_window", "window_mask", "cache_positions")),  # follow-up experiments
    "vit_hooks.hooks", "vit_hooks.token_roles", "vit_hooks.embedded_onnx", "vit_hooks.parity", "vit_hooks.images",
    "vit_hooks.preprocessing", "vit_hooks.layer_stats", "vit_hooks.register_means", "vit_hooks.fix_reg_mean",
    "vit_hooks.linear_head", "vit_hooks.evaluation", "vit_hooks.experiments", "vit_hooks.image_file",  # vision
    "train_gpt2_bias.attention", "train_gpt2_bias.model", "tests.support.plain_gpt", "train_gpt2_bias.data",  # trainer
)
if not any(type(finder).__module__ == "jaxtyping._import_hook" for finder in sys.meta_path):  # once, if imported twice
    if any(name in sys.modules for name in TYPECHECKED):
        raise RuntimeError(f"{', '.join(TYPECHECKED)} imported before tests/conftest.py could install the type-checking hook")
    # The PEP 484 numeric tower lets an int pass where a float is annotated (MassiveCriterion(min_abs=100)).
    jaxtyping.install_import_hook(TYPECHECKED, "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))")

import pytest
import torch

import mech_interp as mi
from mech_interp.data.locations import find_data
from mech_interp.models.planted import (  # noqa: F401
    MARKER_DIM,
    PLANT_CHAR,
    PLANT_DIM,
    PLANT_LAYER,
    plant_massive_activation,
)
from mech_interp.viz import writing as _writing
from mech_interp.viz.print_style import untitled_axes
from mech_interp.viz.writing import PNG_ENV

CPU = torch.device("cpu")
PLANT_PROMPT = "Hello there. How are you today? Fine."

TIERS = ("unit", "integration", "acceptance")
ACCEPTANCE_MODULES = {"test_notebook.py"}
ACCEPTANCE_FIXTURES = {"smollm2"}
ACCEPTANCE_NAMES = {"shared_data"}
# Names whose appearance in a test (or in what it calls) means a model is built or the CLI runs.
LOADS_A_MODEL = {"load_model", "load_hf", "hooked_from_hf", "from_pretrained", "HookedTransformer",
                 "run_cli", "cli", "execute", "subprocess", "planted", "smollm2"}


# Static PNG export starts a Chromium per figure through kaleido (seconds each): HTML figures only,
# in this process and every process it starts (CLI subprocesses, Ray workers), except in the tests
# marked ``png``, which check the PNGs themselves.
os.environ[PNG_ENV] = "0"


def _titled_write_figure(write):
    """Every figure any test writes must title each axis it draws on (issue 19: figures fit for papers): checked
    here, once, on all of them, instead of in a test per figure."""
    def checked(fig, base, plotly_js_src):
        untitled = untitled_axes(fig)
        assert not untitled, f"{Path(base).name}: axes without a title: {untitled}"
        return write(fig, base, plotly_js_src)
    return checked


_writing.write_figure = _titled_write_figure(_writing.write_figure)


@pytest.fixture(autouse=True)
def _png_where_marked(request, monkeypatch):
    if request.node.get_closest_marker("png"):
        monkeypatch.delenv(PNG_ENV)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``), the session's
    count given back after it: tiny forwards gain nothing from a second thread, which on a loaded 2-core machine waits
    at every OpenMP barrier (40x slower per op measured), and golden and resumed runs are bit-exact for one thread
    count only."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _quiet_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data(relative: str) -> Path:
    path = find_data(relative)
    if path is None:
        pytest.skip(f"{relative} is absent: put ../shared/data beside the checkout (or set MECH_INTERP_DATA) to run this test")
    return path


@pytest.fixture
def planted():
    """(HF model, HookedTransformer, token id) with a massive activation planted at PLANT_LAYER."""
    from mech_interp.models.conversion import hooked_from_hf  # the hooked_transformer engine: absent with TL 4

    hf = mi.load_hf("planted:gpt2-tiny")
    token_id = hf.tokenizer.convert_tokens_to_ids(PLANT_CHAR)
    return hf, hooked_from_hf(hf, CPU, torch.float32), token_id


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M: (HF model bundle, HookedTransformer on the users' fast path). Once per session."""
    hf = mi.load_hf("smollm2-135m")
    return hf, mi.load_model("smollm2-135m", device="cpu", fast_paths=True)


def _names_used(fn, seen: set[int]) -> set[str]:
    """Global and attribute names read by ``fn``, by its nested functions, and by the functions of
    the test package it calls (helpers like ``run_cli``), recursively."""
    fn = getattr(fn, "__wrapped__", fn)
    code = getattr(fn, "__code__", None)
    if code is None or id(code) in seen:
        return set()
    seen.add(id(code))
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(const for const in c.co_consts if isinstance(const, types.CodeType))
    module_globals = getattr(fn, "__globals__", {})
    for name in list(names):
        helper = module_globals.get(name)
        if isinstance(helper, types.FunctionType) and helper.__module__.split(".")[0] == "tests":
            names |= _names_used(helper, seen)
    return names


def _tier(item: pytest.Item) -> str:
    fixtures = set(getattr(item, "fixturenames", ()))
    names = _names_used(getattr(item, "function", None), set())
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        for fixturedef in defs:
            if getattr(fixturedef.func, "__module__", "").split(".")[0] == "tests":
                names |= _names_used(fixturedef.func, set())
    if (item.path.name in ACCEPTANCE_MODULES or fixtures & ACCEPTANCE_FIXTURES
            or names & ACCEPTANCE_NAMES):
        return "acceptance"
    if fixtures & LOADS_A_MODEL or names & LOADS_A_MODEL:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(getattr(pytest.mark, _tier(item)))
