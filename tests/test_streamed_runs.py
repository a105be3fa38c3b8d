"""Streamed runs through the command line: ``--placement streamed`` (or ``auto`` when the planner says the model does
not fit ``--max-memory``) runs the layer-wise study one block's weights at a time, records the placement and its
measured peak, resumes after a kill, and refuses what it cannot do in one line before any weight is read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import mech_interp as mi
from mech_interp.models.placement.memory_units import format_bytes
from mech_interp.models.placement.streamed_pass import STATE_FILE

from .cli_runs import assert_refused, run_cli

RUN = "layerwise__n_seqs=2__seq_len=32"
TABLES = ("layerwise", "top_entries", "massive_entries")


def _save_random_llama(directory: Path, **shape) -> Path:
    """A random-init LLaMA of ``shape`` with the byte tokenizer, saved as an HF directory of safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mech_interp.models.tokenizers import byte_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=264, max_position_embeddings=1024, tie_word_embeddings=False, **shape)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory) -> Path:
    """Eight blocks of 64 MiB (float32): 514 MiB of weights, a block's worth of activations at these lengths."""
    return _save_random_llama(tmp_path_factory.mktemp("wide") / "wide-llama", hidden_size=1024, intermediate_size=4096,
                              num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    hf = mi.load_hf("random:llama-tiny")
    hf.model.save_pretrained(directory)
    hf.tokenizer.save_pretrained(directory)
    return directory


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(run_dir / f"{name}.parquet") for name in TABLES}


def _by_placement(args: list, names, placements, tmp_path: Path, capsys) -> dict[str, dict[str, pd.DataFrame]]:
    """The run of ``args`` under each placement (in its own results root), and the tables ``names`` it wrote."""
    tables = {}
    for placement in placements:
        code, out, err = run_cli([*args, "--placement", placement, "--out", tmp_path / placement], capsys)
        assert code == 0, err
        assert out.startswith(f"[placement] {placement}"), out
        run = next((tmp_path / placement / "tiny-llama").iterdir())
        tables[placement] = {name: pd.read_parquet(run / f"{name}.parquet") for name in names}
    return tables


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "mech_interp.cli", *map(str, args)]


def test_streamed_and_whole_runs_record_their_placement_and_agree(tiny_llama, tmp_path, capsys):
    args = ["layerwise", "--model", tiny_llama, "--n-seqs", 2, "--seq-len", 32, "--batch-size", 2]
    code, out, err = run_cli([*args, "--placement", "streamed", "--out", tmp_path / "streamed"], capsys)
    assert code == 0, err
    assert out.startswith("[placement] streamed: planned peak "), out
    code, out, err = run_cli([*args, "--placement", "whole", "--out", tmp_path / "whole"], capsys)
    assert code == 0, err
    assert out.startswith("[placement] whole: every weight on the device"), out
    streamed, whole = (tmp_path / p / "tiny-llama" / "layerwise__n_seqs=2__seq_len=32__batch_size=2"
                       for p in ("streamed", "whole"))
    manifest = json.loads((streamed / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "streamed" and manifest["placement"]["placement"] == "streamed"
    assert manifest["placement"]["predicted_peak_bytes"] > 0
    assert json.loads((whole / "manifest.json").read_text())["placement"]["placement"] == "whole"
    # HF's decoder layers against TransformerLens' engine: equal to float tolerance, as between engines
    for name, table in _tables(streamed).items():
        pd.testing.assert_frame_equal(table, _tables(whole)[name], check_exact=False, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer", [None, 2])
def test_the_feature_view_streams_to_the_same_grid(layer, tiny_llama, tmp_path, capsys):
    args = ["feature-view", "--model", tiny_llama, "--prompt", "Summer is warm. Winter is cold."]
    args += ["--layer", layer] if layer is not None else []
    grids = {}
    for placement in ("streamed", "whole"):
        code, out, err = run_cli([*args, "--placement", placement, "--out", tmp_path / placement], capsys)
        assert code == 0, err
        run = next((tmp_path / placement / "tiny-llama").iterdir())
        grids[placement] = pd.read_parquet(run / "activations.parquet")
        summary = json.loads((run / "manifest.json").read_text())["summary"]
        assert summary["layer"] == (layer if layer is not None else 2)  # the tiny Llama's middle block: none massive
    pd.testing.assert_frame_equal(grids["streamed"], grids["whole"], check_exact=False, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mean_mode", ["detected", "fixed_sites"])
def test_the_intervention_streams_every_condition_in_one_pass_to_the_same_perplexities(mean_mode, tiny_llama, tmp_path,
                                                                                       capsys):
    """A loose criterion makes the random tiny Llama's block 1 'massive' in places, so both resets change something."""
    args = ["intervention", "--model", tiny_llama, "--datasets", "builtin", "--mean-text", "builtin", "--layer", 1,
            "--n-windows", 3, "--n-mean-seqs", 2, "--seq-len", 24, "--batch-size", 2, "--min-abs", 0.08, "--min-ratio", 4,
            "--mean-mode", mean_mode]
    tables = {}
    for placement in ("streamed", "whole"):
        code, out, err = run_cli([*args, "--placement", placement, "--out", tmp_path / placement], capsys)
        assert code == 0, err
        run = next((tmp_path / placement / "tiny-llama").iterdir())
        tables[placement] = pd.read_parquet(run / "perplexity_long.parquet")
    streamed, whole = tables["streamed"], tables["whole"]
    assert streamed["condition"].tolist() == ["original", "set_zero", "set_mean"]
    assert streamed["replaced"].tolist()[0] == 0 and min(streamed["replaced"].tolist()[1:]) > 0, "both resets acted"
    pd.testing.assert_frame_equal(streamed, whole, check_exact=False, rtol=1e-4)
    assert streamed["perplexity"].iloc[1] != streamed["perplexity"].iloc[0], "set_zero changed the model"


def test_head_scores_stream_to_the_same_tables(tiny_llama, tmp_path, capsys):
    args = ["head-scores", "--model", tiny_llama, "--n-seqs", 3, "--seq-len", 24, "--batch-size", 2, "--n-boot", 50,
            "--min-abs", 0.08, "--min-ratio", 4]
    tables = _by_placement(args, ("head_scores", "head_sets", "sink_share", "massive_positions"), ("streamed", "whole"),
                           tmp_path, capsys)
    assert tables["streamed"]["head_scores"]["massive_score"].notna().any(), "some head reads a massive key"
    for name, table in tables["streamed"].items():
        pd.testing.assert_frame_equal(table, tables["whole"][name], check_exact=False, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["zero", "mean"])
def test_head_ablation_streams_every_head_set_in_one_pass_to_the_same_tables(how, tiny_llama, tmp_path, capsys):
    args = ["head-ablation", "--model", tiny_llama, "--n-seqs", 3, "--seq-len", 24, "--batch-size", 2, "--n-boot", 50,
            "--n-random", 2, "--min-abs", 0.08, "--min-ratio", 4, "--how", how]
    tables = _by_placement(args, ("change_by_layer", "entry_changes", "perplexity", "head_sets"), ("streamed", "whole"),
                           tmp_path, capsys)
    streamed, whole = tables["streamed"], tables["whole"]
    assert streamed["perplexity"]["condition"].tolist() == ["clean", "top-3", "bottom-3", "random-3 #0", "random-3 #1",
                                                            "top_residual_slice-3"]
    assert (streamed["perplexity"]["change_pct"].iloc[1:] != 0).all(), "every ablation changed the model"
    assert len(streamed["entry_changes"]) > 0, "the clean run has massive entries to follow"
    for name, table in streamed.items():
        # percentages of near-equal numbers: compared in percentage points
        pd.testing.assert_frame_equal(table, whole[name], check_exact=False, rtol=1e-5, atol=1e-4)


SPILLED_RUNS = {  # experiment -> its arguments and the tables to compare
    "feature-view": (["--layer", 2], ("activations", "massive_entries")),
    "intervention": (["--datasets", "builtin", "--mean-text", "builtin", "--layer", 1, "--n-windows", 3,
                      "--n-mean-seqs", 2, "--seq-len", 24, "--batch-size", 2, "--mean-mode", "fixed_sites"],
                     ("perplexity_long", "massive_means", "mean_pass_layerwise")),
    "head-scores": (["--n-seqs", 3, "--seq-len", 24, "--batch-size", 2, "--n-boot", 50],
                    ("head_scores", "massive_positions")),
    "head-ablation": (["--n-seqs", 3, "--seq-len", 24, "--batch-size", 2, "--n-boot", 50, "--n-random", 1, "--how",
                       "mean"], ("change_by_layer", "entry_changes", "perplexity")),
    "head-cumulative": (["--n-seqs", 3, "--seq-len", 24, "--max-heads", 3, "--how", "mean"], ("cumulative",)),
    "head-3d": (["--how", "mean"], ("before_after", "massive_entries")),
}


@pytest.mark.parametrize("experiment, extra", [("head-cumulative", []), ("head-3d", []),
                                               ("head-3d", ["--how", "residual_slice", "--heads", "1.0,2.3"])])
def test_the_other_head_experiments_stream_to_the_same_tables(experiment, extra, tiny_llama, tmp_path, capsys):
    args, names = SPILLED_RUNS[experiment]
    common = [experiment, "--model", tiny_llama, *args, *extra, "--min-abs", 0.08, "--min-ratio", 4]
    tables = _by_placement(common, names, ("streamed", "whole"), tmp_path, capsys)
    first = tables["streamed"][names[0]]
    changed = first["massive_change_pct"].iloc[1:] if experiment == "head-cumulative" else first["change"]
    assert changed.abs().max() > 0, "the ablation changed the model"
    for name in names:
        pd.testing.assert_frame_equal(tables["streamed"][name], tables["whole"][name], check_exact=False, rtol=1e-5,
                                      atol=1e-4)


@pytest.mark.parametrize("experiment", sorted(SPILLED_RUNS))
def test_every_streamed_experiment_spills_to_the_same_tables(experiment, tiny_llama, tmp_path, capsys, monkeypatch):
    """With the residual streams on disk between blocks (a head set's branch linking the clean streams' files where it
    forks), every table equals the in-memory pass' bit for bit; no spilled file outlives the run."""
    from mech_interp.models.placement.residual_streams import ResidualStreams

    args, names = SPILLED_RUNS[experiment]
    common = [experiment, "--model", tiny_llama, *args, "--min-abs", 0.08, "--min-ratio", 4]
    tables, written = {}, {"spilled": 0, "streamed": 0}
    store = ResidualStreams.__setitem__

    def counted(self, j, value):
        written[placement] += self.spilled
        store(self, j, value)

    monkeypatch.setattr(ResidualStreams, "__setitem__", counted)
    for placement in ("spilled", "streamed"):
        tables |= _by_placement(common, names, (placement,), tmp_path, capsys)
    for name in names:
        pd.testing.assert_frame_equal(tables["spilled"][name], tables["streamed"][name], check_exact=True)
    assert written["spilled"] > 0 and written["streamed"] == 0, written
    assert not list((tmp_path / "spilled").rglob("*.pt")), "the spilled streams are removed with the run's pieces"


def test_auto_spills_the_residual_streams_when_only_that_fits(tmp_path, capsys):
    """A wide residual stream and thin blocks (two 16-wide heads, a 32-wide MLP): the windows' streams outweigh a
    block, so a budget below the streamed peak still fits the spilled one."""
    from mech_interp.models.placement.memory_plan import MemoryPlan
    from mech_interp.models.placement.model_shape import model_shape
    from mech_interp.models.spec import ModelSpec

    thin = _save_random_llama(tmp_path / "thin-llama", hidden_size=1024, intermediate_size=32, num_hidden_layers=8,
                              num_attention_heads=2, num_key_value_heads=2, head_dim=16)
    plan = MemoryPlan(model_shape(ModelSpec.parse(str(thin))), "float32", 64, 2, 20)
    budget = (plan.peak("spilled") + plan.peak("streamed")) // 2
    assert plan.peak("spilled") < budget < min(plan.peak("streamed"), plan.peak("whole"))
    args = ["layerwise", "--model", thin, "--n-seqs", 20, "--seq-len", 64, "--batch-size", 2]
    code, out, err = run_cli([*args, "--max-memory", f"{budget}B", "--out", tmp_path / "spilled"], capsys)
    assert code == 0, err
    assert out.startswith("[placement] spilled: planned peak"), out
    assert "the residual streams on disk between blocks" in out
    code, out, err = run_cli([*args, "--placement", "streamed", "--out", tmp_path / "streamed"], capsys)
    assert code == 0, err
    run = "thin-llama/layerwise__n_seqs=20__seq_len=64__batch_size=2"
    for name, table in _tables(tmp_path / "spilled" / run).items():
        pd.testing.assert_frame_equal(table, _tables(tmp_path / "streamed" / run)[name], check_exact=True)
    assert not list((tmp_path / "spilled").rglob("*.partial")), "the spilled streams went with the run's pieces"
    # one batch, two runs with the same options: the one whose windows fit streams, the other spills (not reused)
    (tmp_path / "batch.toml").write_text(f"""
[defaults]
max_memory = "{budget}B"
[[runs]]
models = ["{thin}"]
experiments = ["layerwise"]
params = {{ n_seqs = 2, seq_len = 64, batch_size = 2 }}
[[runs]]
models = ["{thin}"]
experiments = ["layerwise"]
params = {{ n_seqs = 20, seq_len = 64, batch_size = 2 }}
""")
    code, _, err = run_cli(["batch", tmp_path / "batch.toml", "--out", tmp_path / "batch"], capsys)
    assert code == 0, err
    placements = {m.parent.name: json.loads(m.read_text())["placement"]["placement"]
                  for m in (tmp_path / "batch").rglob("manifest.json")}
    assert placements == {"layerwise__n_seqs=2__seq_len=64__batch_size=2": "streamed", run.split("/")[1]: "spilled"}
    code, _, err = run_cli([*args, "--max-memory", f"{budget}B", "--placement", "whole", "--out", tmp_path / "w"], capsys)
    assert_refused(code, err, f"more than --max-memory {budget}B: allow more memory, run fewer or shorter windows, or "
                   "--placement spilled", tmp_path / "w")


def test_a_model_larger_than_its_memory_limit_is_streamed_within_the_planned_peak(wide_llama, tmp_path):
    """Must-hold of issue 18: weights 2.5x the memory allowed; the auto placement streams them; the memory the pass
    adds (Linux VmHWM) stays within 10% of the planner's prediction."""
    limit = 200 * 2**20
    weights = sum(p.stat().st_size for p in wide_llama.glob("*.safetensors"))
    assert weights > 2.5 * limit
    done = subprocess.run(_cli("layerwise", "--model", wide_llama, "--n-seqs", 2, "--seq-len", 32, "--max-memory",
                               "200MiB", "--out", tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[placement] streamed: planned peak"), done.stdout
    manifest = json.loads((tmp_path / "wide-llama" / RUN / "manifest.json").read_text())
    predicted, measured = manifest["placement"]["predicted_peak_bytes"], manifest["summary"]["streamed_peak_bytes"]
    assert predicted < limit
    assert measured <= 1.1 * predicted, f"measured {format_bytes(measured)}, planned {format_bytes(predicted)}"
    assert measured >= 0.5 * predicted, "the pass held a block's weights: the measurement saw them"


def test_a_killed_streamed_run_resumes_at_its_next_block(wide_llama, tmp_path, capsys):
    args = ["layerwise", "--model", wide_llama, "--n-seqs", 4, "--seq-len", 256, "--placement", "streamed"]
    run_dir = tmp_path / "killed" / "wide-llama" / "layerwise__n_seqs=4__seq_len=256"
    proc = subprocess.Popen(_cli(*args, "--out", tmp_path / "killed"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    reached, deadline = 0, time.monotonic() + 240
    try:
        while reached < 2 and proc.poll() is None and time.monotonic() < deadline:
            states = list(run_dir.parent.glob(f"{run_dir.name}.partial/pieces/*/{STATE_FILE}"))
            if states:
                try:
                    reached = torch.load(states[0], weights_only=True)["next_block"]
                except Exception:  # replaced while read
                    pass
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 2 <= reached < 8, f"the run was not caught in the middle (block {reached})"
    code, out, err = run_cli([*args, "--out", tmp_path / "killed"], capsys)
    assert code == 0, err
    resumed_at = int((out + err).split("going on at block ")[1].split()[0])
    assert reached <= resumed_at < 8, err
    code, _, err = run_cli([*args, "--out", tmp_path / "straight"], capsys)
    assert code == 0, err
    straight = tmp_path / "straight" / "wide-llama" / run_dir.name
    for name, table in _tables(run_dir).items():
        pd.testing.assert_frame_equal(table, _tables(straight)[name], check_exact=True)


@pytest.mark.parametrize("extra, needle", [
    (["--placement", "sideways"], "--placement 'sideways' is not a placement: expected one of auto, whole, streamed"),
    (["--max-memory", "3 parsecs"], "--max-memory '3 parsecs' is not a size: expected a number with a unit"),
    (["--max-memory", "2MiB", "--placement", "streamed"], "does not fit 2 MiB even streamed"),
    (["--max-memory", "2MiB", "--placement", "whole"], "does not fit 2 MiB even streamed"),
    (["--placement", "streamed", "--hooks", "blocks.1.hook_mlp_out"],
     "hook point 'blocks.1.hook_mlp_out' is not recorded by a streamed pass"),
])
def test_placements_that_cannot_run_are_refused_before_loading(extra, needle, tiny_llama, tmp_path, capsys):
    code, _, err = run_cli(["layerwise", "--model", tiny_llama, "--out", tmp_path / "out", *extra], capsys)
    assert_refused(code, err, needle, tmp_path / "out")


def test_streaming_what_only_runs_whole_is_refused_in_one_line(tiny_llama, tmp_path, capsys):
    code, _, err = run_cli(["attention", "--model", tiny_llama, "--placement", "streamed", "--out", tmp_path / "a"],
                           capsys)
    assert_refused(code, err, "experiment 'attention' does not run streamed: --placement streamed is for "
                   "feature_view, layerwise, intervention", tmp_path / "a")
    code, _, err = run_cli(["head-sweep", "--model", tiny_llama, "--placement", "streamed", "--out", tmp_path / "s"],
                           capsys)
    assert_refused(code, err, "experiment 'head_sweep' does not run streamed: --placement streamed is for "
                   "head_scores, head_ablation, head_cumulative, head_3d", tmp_path / "s")
    code, _, err = run_cli(["layerwise", "--model", "random:llama-tiny", "--placement", "streamed", "--out",
                            tmp_path / "b"], capsys)
    assert_refused(code, err, "registered model 'random:llama-tiny' is built in code", tmp_path / "b")
    hf = mi.load_hf("random:gpt2-tiny")
    hf.model.save_pretrained(tmp_path / "gpt2")
    hf.tokenizer.save_pretrained(tmp_path / "gpt2")
    code, _, err = run_cli(["layerwise", "--model", tmp_path / "gpt2", "--placement", "streamed", "--out",
                            tmp_path / "c"], capsys)
    assert_refused(code, err, "GPT2LMHeadModel cannot be streamed yet", tmp_path / "c")
    code, _, err = run_cli(["attention", "--model", tmp_path / "gpt2", "--max-memory", "1MiB", "--out",
                            tmp_path / "d"], capsys)
    assert_refused(code, err, "needs", tmp_path / "d")
