"""``mech-interp batch --backend ray``: refusals before anything runs, what a task needs, what each
node must see, and a real local Ray (2 CPUs) whose worker is killed mid-run."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from mech_interp.models.run_options import RunOptions
from mech_interp.runs.ray_backend import probe_node
from mech_interp.runs.resources import BASE_MEMORY, GIB, WEIGHT_COPIES, resources_for
from mech_interp.runs.spec import RunSpec, resolve
from tests.cli_runs import assert_refused, files_under, run_cli

SWEEP = """
[defaults]
device = "cpu"
[[runs]]
models = ["random:gpt2-tiny", "random:llama-tiny"]
experiments = ["layerwise"]
params = { n_seqs = 2, seq_len = 32 }
[[runs]]
models = ["random:llama-tiny"]
experiments = ["layerwise"]
params = { n_seqs = 120, seq_len = 256 }  # the slow one, killed mid-run (about 2.5 s of computing: a kill 0.5 s in lands inside it)
[[runs]]
models = ["random:gpt2-tiny"]
experiments = ["feature_view"]
layers = [2]
[ray]
results = "{results}"
resources = { "*" = { memory_gb = 0.25 } }
"""
SLOW = "random-llama-tiny/layerwise__n_seqs=120__seq_len=256"


def _config(tmp_path: Path, results: str = "driver", text: str = SWEEP) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text.replace("{results}", results))
    return path


# --------------------------------------------------------------------------- refused before any run


@pytest.mark.parametrize("args, needle", [
    (["--backend", "ray", "--address", "not an address"], "--address 'not an address' is not allowed: expected auto, HOST:PORT"),
    (["--backend", "ray", "--address", "host:99999"], "--address 'host:99999' is not allowed"),
    (["--backend", "ray", "--max-retries", "-1"], "--max-retries -1: expected an integer >= 0"),
    (["--address", "auto"], "--address is for --backend ray"),
    (["--max-retries", "2"], "--max-retries is for --backend ray"),
    (["--backend", "slurm"], "argument --backend: invalid choice: 'slurm'"),
])
def test_bad_backend_flags_are_refused(tmp_path, capsys, args, needle):
    out = tmp_path / "results"
    code, _, err = run_cli(["batch", _config(tmp_path), "--out", out, *args], capsys)
    assert_refused(code, err, needle, out)


@pytest.mark.parametrize("ray_table, needle", [
    ('results = "nfs"', "[ray].results = 'nfs': expected one of driver, shared"),
    ('where = "x"', "[ray]: unknown key 'where' (accepted: out, resources, results)"),
    ('out = "shared/results"', "[ray].out = 'shared/results': expected an absolute path that every node mounts"),
    ('out = "/srv/results"\nresults = "driver"', "out = '/srv/results' is a shared results path, but results = 'driver'"),
    ('resources = { "gpt2" = { num_gpus = 1 } }', "'gpt2' is not a model of any run"),
    ('resources = { "*" = { gpus = 1 } }', "unknown key 'gpus' (accepted: num_cpus, num_gpus, memory_gb)"),
    ('resources = { "*" = { num_gpus = -1 } }', "num_gpus = -1: expected a number >= 0"),
    ('resources = { "*" = { num_cpus = 0.00001 } }', "num_cpus = 1e-05: Ray counts CPUs in steps of 0.0001"),
])
def test_bad_ray_tables_are_refused(tmp_path, capsys, ray_table, needle):
    text = SWEEP.split("[ray]")[0] + "[ray]\n" + ray_table + "\n"
    out = tmp_path / "results"
    code, _, err = run_cli(["batch", _config(tmp_path, text=text), "--out", out, "--backend", "ray"], capsys)
    assert_refused(code, err, needle, out)


def test_missing_ray_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    out = tmp_path / "results"
    code, _, err = run_cli(["batch", _config(tmp_path), "--out", out, "--backend", "ray"], capsys)
    assert_refused(code, err, "--backend ray needs Ray, an optional extra: pip install -e '.[ray]'", out)


def test_no_cluster_at_the_address_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray", reason="the [ray] extra is not installed (make install adds it)")
    import ray

    assert not ray.is_initialized()  # before the module's local Ray starts
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "results"
    code, _, err = run_cli(["batch", _config(tmp_path), "--out", out, "--backend", "ray", "--address", "auto"], capsys)
    assert_refused(code, err, "--address auto: no running Ray cluster was found: start one with 'ray start --head'", out)


# --------------------------------------------------------------------------- what a task asks for


def test_resources_come_from_registry_metadata_and_overrides():
    from mech_interp.models.registry import model_entry

    cpu = resolve(RunSpec("layerwise", RunOptions(model="random:llama-1b", device="cpu", dtype="bfloat16")))
    needs = resources_for(cpu, {})
    assert needs.num_gpus == 0 and needs.num_cpus == 1
    assert needs.memory == BASE_MEMORY + WEIGHT_COPIES * model_entry("random:llama-1b").n_params * 2
    gpu = resolve(RunSpec("layerwise", RunOptions(model="random:llama-1b", device="cuda:1")))
    assert resources_for(gpu, {}).num_gpus == 1
    overrides = {"*": {"memory_gb": 2.0, "num_cpus": 4.0}, "random:llama-1b": {"memory_gb": 9.0}}
    tuned = resources_for(gpu, overrides)
    assert (tuned.num_cpus, tuned.num_gpus, tuned.memory) == (4.0, 1.0, 9 * GIB)  # the model's own entry wins over "*"


def test_probe_names_what_a_node_lacks(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"x" * 10)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / ".ray-probe-tok").write_text("tok")
    inputs = {str(model): 10, "texts/a.txt": 5}
    assert probe_node(str(tmp_path), inputs, str(shared), "tok") == []
    problems = probe_node(str(tmp_path / "elsewhere"), {**inputs, str(model): 11}, str(shared), "other")
    assert problems == [
        f"{str(model)!r} differs here (not the driver's 11 bytes)",
        f"'texts/a.txt' is relative and the driver's directory {tmp_path / 'elsewhere'} does not exist here",
        f"--out {shared} is not the driver's directory here (the driver's marker file is absent)",
    ]
    assert probe_node(str(tmp_path), {"gone.txt": 3}, None, None) == ["'gone.txt' does not exist here"]


def test_runs_sharing_a_directory_run_once_or_are_refused(tmp_path, capsys):
    from mech_interp.runs.batch import unique_runs

    same = [resolve(RunSpec("layerwise", RunOptions(model="random:gpt2-tiny", device=d))) for d in ("cpu", "auto")]
    assert unique_runs(same) == same[:1]  # the device is in neither the name nor the identity
    import mech_interp as mi

    hf = mi.load_hf("random:gpt2-tiny")
    for parent in ("a", "b"):
        hf.model.save_pretrained(tmp_path / parent / "tiny")
        hf.tokenizer.save_pretrained(tmp_path / parent / "tiny")
    text = (SWEEP.split("[[runs]]")[0] + f"[[runs]]\nmodels = ['{tmp_path / 'a' / 'tiny'}', '{tmp_path / 'b' / 'tiny'}']\n"
            "experiments = ['layerwise']\n")
    out = tmp_path / "results"
    for backend in ("local", "ray"):  # the local backend would replace the first run by the second
        code, _, err = run_cli(["batch", _config(tmp_path, text=text), "--out", out, "--backend", backend], capsys)
        assert_refused(code, err, "both write <out>/tiny/layerwise (options.model was", out)


def test_a_published_run_holds_exactly_its_files(tmp_path):
    """What a killed attempt left in <run>.partial (pieces, a stale figure) is not published with a task's run."""
    from mech_interp.runs.output import RunWriter

    run_dir = tmp_path / "m" / "layerwise"
    partial = run_dir.with_name("layerwise.partial")
    (partial / "pieces").mkdir(parents=True)
    (partial / "pieces" / "abc.json").write_text("{}")
    (partial / "stale_figure.html").write_text("old")
    RunWriter(run_dir, tmp_path, {"x": 1}).publish_files({"summary.txt": b"new\n", "manifest.json": b"{}"})
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")) == ["manifest.json", "summary.txt"]
    assert not partial.exists()


# --------------------------------------------------------------------------- a real local Ray


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (make install adds it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _kill_when_running(name_part: str, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the Ray worker whose process title names the task ``name_part`` once it is running."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::mech-interp:") and name_part in title:
                time.sleep(0.5)  # well inside the run: its model is loaded and it is computing
                try:
                    still = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    still = ""
                if still != title:
                    continue  # it finished meanwhile: a kill now would hit an idle worker and prove nothing
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.02)


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    return {p.relative_to(root).as_posix(): pd.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def _manifests(root: Path) -> dict[str, dict]:
    import json

    return {p.parent.relative_to(root).as_posix(): json.loads(p.read_text()) for p in sorted(root.rglob("manifest.json"))}


@pytest.mark.acceptance
def test_killed_worker_fails_one_run_and_the_rerun_completes_it_as_locally(local_ray, tmp_path, capsys):
    config = _config(tmp_path)
    out = tmp_path / "ray"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_running, args=(SLOW, stop, killed), daemon=True)
    killer.start()
    try:
        code, stdout, _ = run_cli(["batch", config, "--out", out, "--backend", "ray", "--max-retries", "0"], capsys)
    finally:
        stop.set()
        killer.join()
    assert killed, "the slow run's worker was never seen running"
    failed = [line for line in stdout.splitlines() if line.startswith("[failed]")]
    assert code == 1 and len(failed) == 1 and SLOW in failed[0], stdout
    assert "4 runs: 3 run now, 0 already complete, 1 failed (1 can be retried: run the same command again)" in stdout
    assert not (out / SLOW).exists() and not list(out.rglob("*.partial")), files_under(out)

    code, stdout, _ = run_cli(["batch", config, "--out", out, "--backend", "ray"], capsys)
    assert code == 0 and "4 runs: 1 run now, 3 already complete, 0 failed" in stdout, stdout
    assert f"[done] {out / SLOW}" in stdout
    # the killed worker's scratch run is removed by the next task that needs scratch
    assert not list(Path(tempfile.gettempdir()).glob(f"mech-interp-ray-run.{killed[0]}.tmp"))

    local = tmp_path / "local"
    code, stdout, _ = run_cli(["batch", config, "--out", local], capsys)
    assert code == 0 and "note: the [ray] table" in stdout
    ray_tables, local_tables = _tables(out), _tables(local)
    assert sorted(ray_tables) == sorted(local_tables) and len(ray_tables) >= 8
    for name, table in local_tables.items():
        pd.testing.assert_frame_equal(ray_tables[name], table, check_exact=True, obj=name)
    ray_manifests, local_manifests = _manifests(out), _manifests(local)
    assert sorted(ray_manifests) == sorted(local_manifests)
    for run, manifest in local_manifests.items():
        assert ray_manifests[run]["identity"] == manifest["identity"] and ray_manifests[run]["summary"] == manifest["summary"]
        assert ray_manifests[run]["backend"]["name"] == "ray" and "backend" not in manifest
        assert ray_manifests[run]["command"] == manifest["command"]  # the driver's command line, not the worker's


@pytest.mark.acceptance
def test_shared_results_and_a_retried_worker(local_ray, tmp_path, capsys):
    """With results = "shared" the tasks write into --out themselves; with --max-retries 1 a worker
    killed mid-run is replaced and its run retried, so the one command completes every run."""
    long_prompt = "[[runs]]\nmodels = ['random:gpt2-tiny']\nexperiments = ['feature_view']\nparams = { prompt = '" + "ab " * 400 + "' }\n"
    out = tmp_path / "shared"
    config = _config(tmp_path, "shared", SWEEP.replace("[ray]", long_prompt + f"[ray]\nout = '{out}'"))
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_running, args=(SLOW, stop, killed), daemon=True)
    killer.start()
    try:
        code, stdout, _ = run_cli(["batch", config, "--out", tmp_path / "unused", "--backend", "ray", "--max-retries", "1"],
                                  capsys)
    finally:
        stop.set()
        killer.join()
    assert killed, "the slow run's worker was never seen running"
    assert f"note: results go to [ray] out = {out}" in stdout and "results -> shared --out" in stdout, stdout
    assert not (tmp_path / "unused").exists()
    # a prompt longer than the context is found once the model has loaded, in the task: bad input, not retried
    failed = [line for line in stdout.splitlines() if line.startswith("[failed]")]
    assert len(failed) == 1 and "bad input: UsageError: --prompt is" in failed[0] and "longer than the model's context" in failed[0]
    assert code == 1 and "5 runs: 4 run now, 0 already complete, 1 failed (1 refused, which a rerun repeats" in stdout, stdout
    manifests = _manifests(out)
    assert len(manifests) == 4 and all(m["backend"]["name"] == "ray" for m in manifests.values())
    assert not list(out.rglob("*.partial"))
    code, stdout, _ = run_cli(["batch", config, "--backend", "ray"], capsys)
    assert code == 1 and "5 runs: 0 run now, 4 already complete, 1 failed" in stdout


@pytest.mark.acceptance
def test_a_run_no_node_can_take_is_refused_before_any_runs(local_ray, tmp_path, capsys):
    text = SWEEP.replace('device = "cpu"', 'device = "cuda"')  # the local Ray has no GPU
    out = tmp_path / "results"
    code, _, err = run_cli(["batch", _config(tmp_path, text=text), "--out", out, "--backend", "ray"], capsys)
    assert_refused(code, err, "needs 1 CPU, 1 GPU, 0.2 GiB, more than any Ray node has (largest: 2 CPU, 0 GPU", out)


VIT_SWEEP = """
[defaults]
images = "{images}"
[[runs]]
models = ["planted:vit-tiny-reg4"]
experiments = ["layerwise", "attention", "register_means"]
[[runs]]
models = ["random:vit-tiny"]
experiments = ["feature_view"]
layers = [1]
[ray]
resources = { "*" = { memory_gb = 0.25 } }
"""


@pytest.mark.acceptance
def test_a_vit_batch_runs_on_ray_as_locally_and_shows_in_the_report(local_ray, tmp_path, capsys):
    """vit-hooks batch takes mech-interp batch's file format and backends: the same tables from Ray as from a local
    run, a run's own files (register_means.pt) sent back, and the report shows the runs' tables and figures."""
    from tests.test_vit_hooks import _images
    from vit_hooks import cli as vit_cli

    def run_vit(args):
        capsys.readouterr()
        code = vit_cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    config = tmp_path / "vit.yaml"  # YAML, which the vision batch did not read before
    import tomllib

    import yaml

    config.write_text(yaml.safe_dump(tomllib.loads(VIT_SWEEP.replace("{images}", str(_images(tmp_path, n=3))))))
    out, local = tmp_path / "ray", tmp_path / "local"
    code, stdout, err = run_vit(["batch", config, "--out", out, "--backend", "ray"])
    assert code == 0 and "4 runs: 4 run now, 0 already complete, 0 failed" in stdout, stdout + err
    assert (next((out / "random-vit-tiny").glob("feature_view__*block=1")) / "manifest.json").is_file()
    assert (next((out / "planted-vit-tiny-reg4").glob("register_means__*")) / "register_means.pt").is_file()
    code, stdout, err = run_vit(["batch", config, "--out", local])
    assert code == 0, err
    ray_tables, local_tables = _tables(out), _tables(local)
    assert sorted(ray_tables) == sorted(local_tables) and len(ray_tables) >= 6
    for name, table in local_tables.items():
        pd.testing.assert_frame_equal(ray_tables[name], table, check_exact=True, obj=name)
    for run, manifest in _manifests(out).items():
        assert manifest["backend"]["name"] == "ray" and manifest["study"] == "vit", run

    code, stdout, err = run_cli(["report", out], capsys)
    assert code == 0 and "report of 4 runs of 2 models" in stdout, stdout + err
    page = (out / "report" / "models" / "planted-vit-tiny-reg4.html").read_text()
    for table in ("layerwise", "attention", "register_means"):
        assert table in page
    figures = [p.name for p in (out / "planted-vit-tiny-reg4").rglob("*.html")]
    assert figures and all(name in page for name in figures), figures


FOLLOWUPS = """
[defaults]
device = "cpu"
[[runs]]
models = ["random:llama-tiny"]
experiments = ["super_weights"]
params = { n_seqs = 1, seq_len = 16, top_k = 1, scales = [2.0] }
[[runs]]
models = ["random:llama-tiny"]
experiments = ["sink_window"]
params = { text = "builtin", seq_len = 24, windows = [8], sinks = [1], mean_text = "builtin", n_mean_seqs = 1 }
[[runs]]
experiments = ["emergence"]
params = { models = "{series}", n_seqs = 2, seq_len = 16 }
"""


@pytest.mark.acceptance
def test_the_followup_experiments_run_on_ray_as_locally_and_show_in_the_report(local_ray, tmp_path, capsys):
    """super-weights, sink-window and emergence (a series of two saved checkpoints, no --model) on the common engine:
    the same tables from Ray as from a local batch, and a report page for each."""
    import mech_interp as mi

    series = []
    for step in (100, 200):
        hf = mi.load_hf("random:gpt2-tiny")
        hf.model.save_pretrained(tmp_path / "saved" / f"step_{step}")
        hf.tokenizer.save_pretrained(tmp_path / "saved" / f"step_{step}")
        series.append(str(tmp_path / "saved" / f"step_{step}"))
    config = tmp_path / "followups.toml"
    config.write_text(FOLLOWUPS.replace("{series}", ",".join(series)))
    out, local = tmp_path / "ray", tmp_path / "local"
    code, stdout, err = run_cli(["batch", config, "--out", out, "--backend", "ray"], capsys)
    assert code == 0 and "3 runs: 3 run now, 0 already complete, 0 failed" in stdout, stdout + err
    code, stdout, err = run_cli(["batch", config, "--out", local], capsys)
    assert code == 0, err
    ray_tables, local_tables = _tables(out), _tables(local)
    assert sorted(ray_tables) == sorted(local_tables)
    assert {name.split("/")[-1] for name in local_tables} >= {"spikes.parquet", "effects.parquet",
                                                               "perplexity.parquet", "emergence.parquet"}
    for name, table in local_tables.items():
        pd.testing.assert_frame_equal(ray_tables[name], table, check_exact=True, obj=name)

    code, stdout, err = run_cli(["report", out], capsys)
    assert code == 0, stdout + err
    pages = {p.stem: p.read_text() for p in (out / "report" / "models").glob("*.html")}
    assert "effects" in pages["random-llama-tiny"] and "perplexity" in pages["random-llama-tiny"]
    assert "emergence" in pages["checkpoint-series"] and "per_block" in pages["checkpoint-series"]
    top = next(t for name, t in local_tables.items() if name.endswith("spikes.parquet")).iloc[0]
    assert f"block {top.layer} W_out[{top.row}, {top.col}]" in pages["random-llama-tiny"]  # the findings box
    assert "perplexity, window W = 8" in pages["random-llama-tiny"]
    assert "first checkpoint with a massive activation" in pages["checkpoint-series"]
