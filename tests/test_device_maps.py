"""``--device-map``: a whole model split over the machine's devices, on either engine (make test runs this module in
both environments). On this machine (no GPU) every map places the model on the CPU, and the tables equal those of a
run without a map; maps naming devices the machine lacks, disk, or a mix of GPUs and the CPU are refused in one line
before any weight is read."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from mech_interp.models.engines import HOOKED_TRANSFORMER, resolve_engine

from .cli_runs import assert_refused, run_cli

RUN = "random-llama-tiny/layerwise__n_seqs=2__seq_len=16"
ARGS = ["layerwise", "--model", "random:llama-tiny", "--n-seqs", "2", "--seq-len", "16"]
NO_GPU = not torch.cuda.is_available()


def _map_file(tmp_path, modules) -> str:
    path = tmp_path / "map.json"
    path.write_text(json.dumps(modules))
    return str(path)


@pytest.mark.skipif(not NO_GPU, reason="on a GPU machine the named maps split over the GPUs (bench/gpu_check.sh)")
@pytest.mark.parametrize("device_map", ["auto", "balanced", "file"])
def test_a_device_map_on_a_cpu_machine_runs_on_the_cpu_with_the_same_tables(device_map, tmp_path, capsys):
    device_map = _map_file(tmp_path, {"": "cpu"}) if device_map == "file" else device_map
    code, out, err = run_cli([*ARGS, "--device-map", device_map, "--out", tmp_path / "mapped"], capsys)
    assert code == 0, err
    assert out.startswith(f"[placement] whole, split by --device-map {device_map} over cpu"), out
    code, _, err = run_cli([*ARGS, "--out", tmp_path / "plain"], capsys)
    assert code == 0, err
    for table in ("layerwise", "top_entries", "massive_entries"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "mapped" / RUN / f"{table}.parquet"),
                                      pd.read_parquet(tmp_path / "plain" / RUN / f"{table}.parquet"), check_exact=True)


@pytest.mark.skipif(not NO_GPU, reason="the machine has the GPU these maps name")
@pytest.mark.parametrize("modules, needle", [
    ({"": 0}, "puts '' on cuda:0, which this machine lacks (it has no CUDA device)"),
    ({"model.layers": "cuda:3", "lm_head": "cpu"}, "puts 'model.layers' on cuda:3, which this machine lacks"),
    ({"model": "disk"}, "puts 'model' on disk: offloading to disk is not supported; use --placement streamed"),
    ({"model": "tpu"}, "puts 'model' on 'tpu': expected one of auto, balanced"),
    ({}, "maps no module"),
    ([0], "that is not a JSON object"),
])
def test_device_maps_naming_what_this_machine_lacks_are_refused_before_loading(modules, needle, tmp_path, capsys):
    code, _, err = run_cli([*ARGS, "--device-map", _map_file(tmp_path, modules), "--out", tmp_path / "out"], capsys)
    assert_refused(code, err, needle, tmp_path / "out")


@pytest.mark.parametrize("extra, needle", [
    (["--device-map", "everywhere"], "--device-map 'everywhere' is neither a named map nor a file"),
    (["--device-map", "auto", "--device", "cpu"], "--device cpu and --device-map auto both say where the model goes"),
    (["--device-map", "auto", "--placement", "streamed"], "a streamed run holds one block at a time on --device"),
])
def test_device_maps_that_contradict_the_run_are_refused(extra, needle, tmp_path, capsys):
    code, _, err = run_cli([*ARGS, *extra, "--out", tmp_path / "out"], capsys)
    assert_refused(code, err, needle, tmp_path / "out")


def test_the_hooked_transformer_splits_evenly_or_not_at_all(tmp_path, capsys):
    code, _, err = run_cli([*ARGS, "--device-map", "sequential", "--out", tmp_path / "out"], capsys)
    if resolve_engine("auto") == HOOKED_TRANSFORMER:
        assert_refused(code, err, "--device-map 'sequential' needs the transformer_bridge engine", tmp_path / "out")
    else:  # accelerate's sequential fill, on the bridge
        assert code == 0, err
