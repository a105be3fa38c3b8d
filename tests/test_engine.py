"""The run engine's contract with its studies, on tiny models: a run resolved once, what a Ray node may see
differently, a model named by another path, notebooks' 0.1 calls, a run that loads no model."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mech_interp.models.run_options import RunOptions
from mech_interp.runs.runner import execute
from mech_interp.runs.spec import RunSpec, resolve
from tests.test_vit_hooks import _images
from vit_hooks.configs import ViTOptions


def _checkpoint(tmp_path):
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        source = timm.create_model("test_vit", pretrained=False, num_classes=0)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    return path


@pytest.mark.integration
def test_a_vit_run_computes_the_same_on_a_node_whose_files_differ_only_in_place_and_time(tmp_path):
    path = _checkpoint(tmp_path)
    images = str(_images(tmp_path, n=1))
    run = resolve(RunSpec("layerwise", ViTOptions(model=f"test_vit@{path}", images=images), study="vit"))
    os.utime(path, ns=(1, 1))  # the same file, another modification time: as on another node
    later = resolve(RunSpec("layerwise", ViTOptions(model=f"test_vit@{path}", images=images), study="vit"))
    assert later.identity != run.identity  # the driver reruns a file replaced in place
    assert run.study.computation(later.identity) == run.study.computation(run.identity)  # a node computes the same
    with open(path, "ab") as f:
        f.write(b"\0")
    grown = resolve(RunSpec("layerwise", ViTOptions(model=f"test_vit@{path}", images=images), study="vit"))
    assert run.study.computation(grown.identity) != run.study.computation(run.identity)  # another file: another computation


@pytest.mark.integration
def test_a_vit_model_named_by_another_path_to_the_same_file_reruns_rather_than_refuses(tmp_path, monkeypatch, capsys):
    from vit_hooks import cli

    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path)
    images = _images(tmp_path, n=1)
    args = ["layerwise", "--images", images, "--out", tmp_path / "out"]
    assert cli.main([str(a) for a in [*args, "--model", "test_vit@w.pth"]]) == 0
    capsys.readouterr()
    assert cli.main([str(a) for a in [*args, "--model", "test_vit@./w.pth"]]) == 0
    assert "[rerun]" in capsys.readouterr().out
    manifest = json.loads(next((tmp_path / "out" / "w").glob("layerwise*/manifest.json")).read_text())
    assert manifest["model_source"] == str((tmp_path / "w.pth").resolve())


@pytest.mark.integration
def test_notebooks_of_0_1_pass_their_model_to_execute(tmp_path):
    """``execute(spec, out, model)`` and ``model=``: the loaded model is used (nothing else loads) and gives the
    numbers of a run that loads its own."""
    import mech_interp as mi
    from mech_interp.models.language_study import LanguageModelStudy
    from mech_interp.runs.runner import LAYER_CONVENTION, model_info

    model = mi.load_model("random:gpt2-tiny", device="cpu", fast_paths=True)
    spec = RunSpec("layerwise", RunOptions(model="random:gpt2-tiny", device="cpu"), {"n_seqs": 2, "seq_len": 16})
    _, own = execute(spec, tmp_path / "own")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LanguageModelStudy, "open", lambda self, run: pytest.fail("a second model was loaded"))
        _, positional = execute(spec, tmp_path / "positional", model)
        _, keyword = execute(spec, tmp_path / "keyword", model=lambda: model)
    for result in (positional, keyword):
        for name, table in own.tables.items():
            assert result.tables[name].equals(table), name
    assert "blocks" in LAYER_CONVENTION and model_info(model)["n_layers"] == 4


@pytest.mark.unit
def test_a_run_that_loads_no_model_still_records_the_study_conventions():
    run = resolve(RunSpec("upstream_means", None, study="vit"))
    assert run.model is None and run.location == "upstream-dinov2-reg/upstream_means"
    assert set(run.study.manifest(None, run)) == {"block_convention", "token_convention"}


@pytest.mark.parametrize("command", ["mech-interp", "vit-hooks"])
def test_models_piped_into_head_stop_quietly(command):
    """``<command> models | head -1``: the engine's models listing, and no traceback when the reader leaves."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / command
    proc = subprocess.run(f"'{script}' models | head -1; exit ${{PIPESTATUS[0]}}", shell=True, executable="/bin/bash",
                          capture_output=True, text=True, timeout=120)
    assert proc.stderr == "" and len(proc.stdout.splitlines()) == 1, proc.stderr
    assert proc.returncode in (0, 141)  # 141 = 128 + SIGPIPE when the listing outran the reader


@pytest.mark.integration
def test_an_experiment_called_as_in_0_1_gives_what_the_engine_gives(tmp_path):
    import mech_interp as mi
    from mech_interp.models.context import ModelContext
    from mech_interp.runs.experiments import get_experiment

    model = mi.load_model("random:gpt2-tiny", device="cpu", fast_paths=True)
    options = RunOptions(model="random:gpt2-tiny", device="cpu")
    experiment = get_experiment("layerwise")
    config = experiment.make_config({"n_seqs": 2, "seq_len": 16})
    old = experiment.fn(model, options, config)
    new = experiment.fn(ModelContext(model, options), config)
    for name, table in new.tables.items():
        assert old.tables[name].equals(table), name
