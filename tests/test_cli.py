"""The command line: bad input fails in one line with status 2 and writes nothing; runs are
atomic, skip when complete and resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import mech_interp.cli
from mech_interp.models.run_options import RunOptions
from mech_interp.runs.runner import execute
from mech_interp.runs.spec import RunSpec, resolve
from mech_interp.viz.writing import PNG_ENV, png_export_available

from .cli_runs import assert_refused, run_cli

TINY = ["--model", "random:gpt2-tiny", "--device", "cpu"]



@pytest.mark.parametrize("args, needle", [
    (["layerwise", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["feature-view", *TINY, "--layer", "7"], "layer 7 out of range"),
    (["intervention", *TINY, "--resets", "set_zero,set_one"], "unknown reset type 'set_one'"),
    (["layerwise", *TINY, "--text", "/no/such/file.txt"], "text file '/no/such/file.txt' does not exist"),
    (["feature-view", *TINY, "--prompt", "   "], "empty prompt"),
    (["intervention", *TINY, "--datasets", "wikitext2,/no/such.txt"], "text file '/no/such.txt' does not exist"),
    (["intervention", *TINY, "--layer", "-9"], "layer -9 out of range"),
    (["layerwise", *TINY, "--dtype", "float8"], "unknown dtype 'float8'"),
    (["layerwise", *TINY, "--min-ratio", "0"], "min_ratio"),
    (["layerwise", *TINY, "--hooks", "blocks.0.hook_nothing"], "unknown hook point 'blocks.0.hook_nothing'"),
    (["layerwise", *TINY, "--min-abs", "nan"], "criterion needs finite"),
    (["layerwise", *TINY, "--k", "0"], "--k 0 is not allowed"),
    (["layerwise", *TINY, "--n-seqs", "0"], "--n-seqs 0 is not allowed"),
    (["layerwise", *TINY, "--batch-size", "0"], "--batch-size 0 is not allowed"),
    (["layerwise", *TINY, "--seq-len", "600"], "--seq-len 600 is longer than the model's context of 512"),
    (["intervention", *TINY, "--n-windows", "-1"], "--n-windows -1 is not allowed"),
    (["intervention", *TINY, "--n-mean-seqs", "0"], "--n-mean-seqs 0 is not allowed"),
    (["layerwise", *TINY, "--hooks", "blocks.1.attn.hook_pattern"], "is not indexed by [batch, pos, ...]"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "results"
    code, stdout, stderr = run_cli([*args, "--out", out], capsys)
    assert_refused(code, stderr, needle, out)


@pytest.mark.parametrize("content, needle", [
    ("[[runs]\nexperiments = ['layerwise']\n", "malformed config file"),
    ("[[runs]]\nexperiments = ['layerwise']\nlayerz = [1]\n", "unknown key 'layerz'"),
    ("[[runs]]\nexperiments = ['no_such']\n", "unknown experiment 'no_such'"),
    ("[[runs]]\nexperiments = ['layerwise']\nparams = { n_seqz = 2 }\n", "'n_seqz' is not a parameter"),
    ("[defaults]\ndevic = 'cpu'\n[[runs]]\nexperiments = ['layerwise']\n", "unknown option 'devic'"),
    # the bad layer is found before the good one runs: nothing may be written
    ("[[runs]]\nmodels = ['random:gpt2-tiny']\nexperiments = ['feature_view']\nlayers = [1, 99]\n",
     "layer 99 out of range for 'random:gpt2-tiny'"),
])
def test_malformed_config_files(tmp_path, capsys, content, needle):
    config = tmp_path / "runs.toml"
    config.write_text(content)
    code, _, stderr = run_cli(["batch", config, "--out", tmp_path / "results"], capsys)
    assert code == 2 and needle in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "results").exists()


def test_console_script_exit_code(tmp_path):
    exe = Path(sys.executable).parent / "mech-interp"
    proc = subprocess.run([str(exe), "layerwise", "--model", "no-such-model", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("mech-interp: error: unknown model 'no-such-model'")


@pytest.mark.png
def test_run_writes_tables_figures_and_manifest(tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    code, stdout, _ = run_cli(["layerwise", *TINY, "--n-seqs", "3", "--seq-len", "64", "--out", out], capsys)
    assert code == 0
    run_dir = out / "random-gpt2-tiny" / "layerwise__n_seqs=3__seq_len=64"
    assert str(run_dir) in stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["n_seqs"] == 3 and manifest["options"]["model"] == "random:gpt2-tiny"
    assert manifest["tokenization"]["prepend_bos"] is False and manifest["seed"] == 0
    assert {"torch", "transformer-lens", "transformers"} <= set(manifest["packages"])
    assert "git_commit" in manifest and manifest["model"]["n_layers"] == 4
    table = pd.read_parquet(run_dir / "layerwise.parquet")
    assert list(table["layer"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(table, pd.read_csv(run_dir / "layerwise.csv"), check_dtype=False)
    html = (run_dir / "layerwise.html").read_text()
    assert 'src="../../plotly.min.js"' in html and len(html) < 200_000  # shared, not embedded
    assert (out / "plotly.min.js").is_file()
    if png_export_available():
        assert (run_dir / "layerwise.png").stat().st_size > 1000
    assert set(manifest["files"]) == {p.name for p in run_dir.iterdir()} - {"manifest.json"}
    # MECH_INTERP_PNG=0: HTML figures only.
    # --prepend-bos is a separate run, recorded as such, and its prompt does start with BOS.
    monkeypatch.setenv(PNG_ENV, "0")
    for flags in ([], ["--prepend-bos"]):
        code, _, stderr = run_cli(["feature-view", *TINY, "--layer", "1", *flags, "--out", out], capsys)
        assert code == 0, stderr
    plain_dir, bos_dir = out / "random-gpt2-tiny" / "feature_view__layer=1", out / "random-gpt2-tiny" / "feature_view__prepend_bos=True__layer=1"
    assert json.loads((bos_dir / "manifest.json").read_text())["tokenization"]["prepend_bos"] is True
    plain = pd.read_parquet(plain_dir / "activations.parquet").groupby("position")["token"].first().tolist()
    with_bos = pd.read_parquet(bos_dir / "activations.parquet").groupby("position")["token"].first().tolist()
    assert with_bos == ["<|endoftext|>", *plain]
    assert list(plain_dir.glob("*.html")) and not list(plain_dir.glob("*.png"))


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    from mech_interp.runs import output as run_output

    def broken(self, name, fig):
        raise RuntimeError("disk full")

    monkeypatch.setattr(run_output.RunWriter, "figure", broken)
    spec = resolve(RunSpec("layerwise", RunOptions(model="random:gpt2-tiny", device="cpu"), {"n_seqs": 2, "seq_len": 32}))
    with pytest.raises(RuntimeError, match="disk full"):
        execute(spec, tmp_path)
    assert not spec.run_dir(tmp_path).exists()
    assert not spec.run_dir(tmp_path).with_name(spec.run_dir(tmp_path).name + ".partial").exists()


def test_batch_runs_skips_and_resumes(tmp_path, capsys):
    config = tmp_path / "runs.yaml"
    config.write_text(
        "defaults: {device: cpu}\n"
        "runs:\n"
        "  - models: [random:gpt2-tiny, random:llama-tiny]\n"
        "    experiments: [feature_view, layerwise]\n"
        "    layers: [1, 3]\n"
        "    params: {n_seqs: 2, seq_len: 32}\n"
    )
    out = tmp_path / "results"
    code, stdout, _ = run_cli(["batch", config, "--out", out], capsys)
    assert code == 0 and "6 runs: 6 run now, 0 already complete" in stdout
    dirs = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*"))
    assert dirs == [f"{m}/{e}" for m in ("random-gpt2-tiny", "random-llama-tiny") for e in
                    ("feature_view__layer=1", "feature_view__layer=3", "layerwise__n_seqs=2__seq_len=32")]

    # A killed run leaves only a .partial directory, never a complete-looking one; the rerun
    # redoes exactly that run and skips the rest.
    victim = out / "random-llama-tiny" / "feature_view__layer=3"
    victim.rename(victim.with_name(victim.name + ".partial"))
    (victim.with_name(victim.name + ".partial") / "manifest.json").unlink()
    code, stdout, _ = run_cli(["batch", config, "--out", out], capsys)
    assert code == 0 and "6 runs: 1 run now, 5 already complete" in stdout
    assert (victim / "manifest.json").is_file() and not victim.with_name(victim.name + ".partial").exists()


def test_intervention_resumes_from_saved_pieces(tmp_path, planted_dir, monkeypatch):
    """A run interrupted after its first perplexity resumes from the saved piece: the rerun
    computes only what is missing and reports the numbers an uninterrupted run reports."""
    import mech_interp.studies.lm.intervention as intervention

    spec = resolve(RunSpec("intervention", RunOptions(model=str(planted_dir), device="cpu"),
                           {"datasets": ["builtin"], "n_windows": 2, "seq_len": 128, "n_mean_seqs": 6}))
    _, uninterrupted = execute(spec, tmp_path / "clean")
    real, calls, kill = intervention.perplexity, [], [True]

    def interrupted_after_one(*args, **kwargs):
        calls.append(kwargs["desc"])
        if len(calls) == 2 and kill and kill.pop():
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(intervention, "perplexity", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, tmp_path / "killed")
    partial = spec.run_dir(tmp_path / "killed").with_name(spec.run_dir(tmp_path / "killed").name + ".partial")
    assert len(list((partial / "pieces").glob("*.json"))) == 1
    calls.clear()
    run_dir, result = execute(spec, tmp_path / "killed")
    assert calls == ["builtin set_zero", "builtin set_mean"]  # "original" came from the piece
    pd.testing.assert_frame_equal(result.tables["perplexity"], uninterrupted.tables["perplexity"])
    assert not partial.exists() and (run_dir / "manifest.json").is_file()


@pytest.fixture
def planted_dir(tmp_path, planted):
    hf, _, _ = planted
    target = tmp_path / "planted-gpt2"
    hf.model.save_pretrained(target)
    hf.tokenizer.save_pretrained(target)
    return target


def test_study_on_a_planted_model_end_to_end(tmp_path, capsys, planted_dir):
    out = tmp_path / "results"
    args = ["study", "--model", planted_dir, "--device", "cpu", "--out", out, "--datasets", "builtin",
            "--n-windows", "2", "--layerwise-n-seqs", "2"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    root = out / "planted-gpt2"
    assert {p.name for p in root.iterdir()} == {"feature_view", "layerwise__n_seqs=2", "intervention__datasets=builtin__n_windows=2", "attention"}
    summary = stdout.split("=== summary: ")[1]  # one summary at the end, after every progress bar
    assert "first massive layer: 2" in summary and "set_zero" in summary and "\nattention: " in summary
    feature = json.loads((root / "feature_view" / "manifest.json").read_text())["summary"]
    assert feature["layer"] == 2 and {m["dim"] for m in feature["massive"]} == {17}
    ppl = pd.read_csv(root / "intervention__datasets=builtin__n_windows=2" / "perplexity.csv")
    assert set(ppl.columns) >= {"dataset", "original", "set_zero", "set_mean", "set_zero_change_pct", "set_mean_change_pct"}
    assert (root / "intervention__datasets=builtin__n_windows=2" / "perplexity.html").is_file()
    # Rerunning the study skips every finished run.
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and stdout.count("[skip]") == 4 and "first massive layer: 2" in stdout.split("=== summary: ")[1]


def test_shipped_batch_configs_are_valid():
    from mech_interp.runs.batch import expand

    configs = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml"))
    assert configs
    for config in configs:
        runs = expand(config)
        assert runs and len({r.location for r in runs}) == len(runs)  # no two runs share a directory


def test_unavailable_named_datasets_are_noted_not_fatal(tmp_path, capsys, planted_dir, monkeypatch):
    import mech_interp.data.texts as text_sources

    monkeypatch.setattr(text_sources, "hub_reachable", lambda: False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    common = ["intervention", "--model", planted_dir, "--device", "cpu", "--n-windows", "2", "--seq-len", "128",
              "--n-mean-seqs", "4"]
    out = tmp_path / "results"
    code, stdout, stderr = run_cli([*common, "--datasets", "hf:someone/corpus,builtin", "--out", out], capsys)
    assert code == 0, stderr
    long = pd.read_csv(next(out.rglob("perplexity_long.csv")))
    assert long.set_index("dataset").loc["hf:someone/corpus", "status"].startswith("unavailable: ")
    assert (long[long["dataset"] == "builtin"]["status"] == "ok").all()
    # With nothing to measure the run fails in one line and leaves nothing.
    out2 = tmp_path / "results2"
    code, _, stderr = run_cli([*common, "--datasets", "hf:someone/corpus", "--out", out2], capsys)
    assert code == 2 and "none of the perplexity datasets could be loaded" in stderr
    assert not out2.exists() or not [p for p in out2.rglob("*") if p.is_file()]


def test_models_sharing_a_directory_name_never_pass_for_each_other(tmp_path, capsys, planted_dir):
    import shutil

    other = tmp_path / "elsewhere" / planted_dir.name
    shutil.copytree(planted_dir, other)
    out = tmp_path / "results"
    args = ["layerwise", "--device", "cpu", "--n-seqs", "2", "--seq-len", "64", "--out", out]
    code, _, stderr = run_cli([*args, "--model", planted_dir], capsys)
    assert code == 0, stderr
    code, stdout, stderr = run_cli([*args, "--model", other], capsys)
    assert code == 2 and f"holds a run of {str(planted_dir.resolve())!r}, not {str(other.resolve())!r}" in stderr
    assert "[skip]" not in stdout
    # Resumable pieces left by one model are not picked up by the other: they are keyed by the model.
    from mech_interp.runs.output import RunWriter

    params = {"datasets": ["builtin"], "n_windows": 2, "seq_len": 128, "n_mean_seqs": 6}
    spec = resolve(RunSpec("intervention", RunOptions(model=str(other), device="cpu"), params))
    foreign = resolve(RunSpec("intervention", RunOptions(model=str(planted_dir), device="cpu"), params))
    writer = RunWriter(spec.run_dir(tmp_path), tmp_path, foreign.identity)
    key = {"dataset": "builtin", "origin": "x", "condition": "original", "layer": 2, "means": None}
    writer.save_piece(key, {"perplexity": 123.0})
    writer._release()
    for identity, expected in ((spec.identity, None), (foreign.identity, {"perplexity": 123.0})):
        writer = RunWriter(spec.run_dir(tmp_path), tmp_path, identity)
        assert writer.load_piece(key) == expected
        writer._release()


def test_batch_killed_for_real_resumes(tmp_path):
    """SIGKILL a batch in the middle of its second run (the process kills itself while writing
    that run's first table, so where the kill lands does not depend on timing): the first run is
    complete, nothing else looks complete, and the rerun finishes exactly the other two."""
    config = tmp_path / "runs.toml"
    config.write_text(
        "[defaults]\ndevice = 'cpu'\n[[runs]]\nmodels = ['random:llama-tiny']\nexperiments = ['layerwise']\n"
        "params = { n_seqs = 4, seq_len = 64 }\n"
        "[[runs]]\nmodels = ['random:llama-tiny']\nexperiments = ['layerwise']\nparams = { n_seqs = 5, seq_len = 64 }\n"
        "[[runs]]\nmodels = ['random:llama-tiny']\nexperiments = ['layerwise']\nparams = { n_seqs = 6, seq_len = 64 }\n"
    )
    out = tmp_path / "results"
    killer = (
        "import os, signal, sys\n"
        "from mech_interp import cli\n"
        "from mech_interp.runs.output import RunWriter\n"
        "commits, table = [], RunWriter.table\n"
        "def table_then_die(self, name, df):\n"
        "    table(self, name, df)\n"
        "    if commits:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "commit = RunWriter.commit\n"
        "def counted(self, manifest):\n"
        "    commits.append(commit(self, manifest))\n"
        "    return commits[-1]\n"
        "RunWriter.table, RunWriter.commit = table_then_die, counted\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", killer, "batch", str(config), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9, proc.stderr
    complete = sorted(p.parent.name for p in out.glob("*/*/manifest.json"))
    assert complete == ["layerwise__n_seqs=4__seq_len=64"]
    partial = out / "random-llama-tiny" / "layerwise__n_seqs=5__seq_len=64.partial"
    assert (partial / "layerwise.parquet").is_file()  # killed mid-write of the second run
    for run_dir in out.glob("*/*"):  # anything under its final name is complete
        assert run_dir.name.endswith(".partial") or (run_dir / "manifest.json").is_file()

    exe = Path(sys.executable).parent / "mech-interp"
    rerun = subprocess.run([str(exe), "batch", str(config), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "3 runs: 2 run now, 1 already complete" in rerun.stdout
    assert len(list(out.glob("*/*/manifest.json"))) == 3 and not list(out.glob("*/*.partial"))


def test_more_sequences_asked_for_than_the_text_holds_is_said(tmp_path, capsys):
    """The run directory is named by the request before the text is tokenized; its summary says what ran."""
    text = tmp_path / "short.txt"
    text.write_text("The river runs to the sea. " * 40)
    out = tmp_path / "results"
    code, stdout, stderr = run_cli(["layerwise", *TINY, "--text", text, "--n-seqs", "1000000000", "--seq-len", "32",
                                    "--out", out], capsys)
    assert code == 0, stderr
    run_dir = next((out / "random-gpt2-tiny").glob("layerwise__*"))
    summary = json.loads((run_dir / "manifest.json").read_text())["summary"]
    ran = summary["n_sequences"]
    assert 1 <= ran < 1000 and summary["n_seqs_requested"] == 1_000_000_000
    said = f"(--n-seqs 1000000000 asked for; the text holds only {ran} windows of 32 tokens)"
    assert said in stdout and said in (run_dir / "summary.txt").read_text()


def test_a_failed_png_export_keeps_the_run_and_records_it(tmp_path, capsys, monkeypatch):
    """kaleido failing (here: the ReferenceError its Chromium bridge raised in the audit) costs the PNG only: the
    tables and HTML figures are published, the manifest lists the missing PNG and why, the command exits 0."""
    import plotly.graph_objects as go

    from mech_interp.viz import writing

    def broken(self, *args, **kwargs):
        raise RuntimeError("ReferenceError: kaleido_scopes is not defined")

    monkeypatch.delenv(PNG_ENV, raising=False)
    monkeypatch.setattr(writing, "png_export_available", lambda: True)
    monkeypatch.setattr(go.Figure, "write_image", broken)
    out = tmp_path / "results"
    with pytest.warns(UserWarning, match=r"layerwise.png was not written \(RuntimeError: ReferenceError: "
                                         r"kaleido_scopes is not defined\); layerwise.html was"):
        code, _, stderr = run_cli(["layerwise", *TINY, "--n-seqs", "2", "--seq-len", "32", "--out", out], capsys)
    assert code == 0, stderr
    run_dir = out / "random-gpt2-tiny" / "layerwise__n_seqs=2__seq_len=32"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["missing_figures"] == {"layerwise.png": "RuntimeError: ReferenceError: kaleido_scopes is not defined"}
    assert {"layerwise.parquet", "layerwise.csv", "layerwise.html"} <= set(manifest["files"])
    assert (run_dir / "layerwise.html").is_file() and not (run_dir / "layerwise.png").exists()


@pytest.mark.parametrize("module", ["mech_interp.cli", "vit_hooks.cli", "train_gpt2_bias.cli"])
def test_every_flag_with_a_default_says_what_it_is(module):
    """Each subcommand's --help shows every option's default: argparse's own, the dataclass field's (such flags keep
    None so that the dataclass applies its default), or a description in the help where the default stands for
    something (every block, the device's free memory, the preset's)."""
    import argparse
    import importlib

    def subcommands(parser, prog):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{prog} {name}".strip(), sub
                    yield from subcommands(sub, f"{prog} {name}")

    silent = []
    names = []
    for name, sub in subcommands(importlib.import_module(module).build_parser(), ""):
        names.append(name)
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            has_default = action.default not in (None, argparse.SUPPRESS, False) or _field_default(action.dest)
            if has_default and "default" not in formatter._get_help_string(action):
                silent.append(f"{name} {action.option_strings[0]}")
    assert not silent, f"options whose help does not say their default: {silent}"
    if module == "mech_interp.cli":
        assert {"study lm", "study heads", "layerwise", "report"} <= set(names), names  # nested ones walked too


def _field_default(dest):
    """Whether a dataclass field behind a flag of that name has a default other than None."""
    import dataclasses

    from mech_interp.runs.studies import STUDIES, get_study

    classes = [c for name in STUDIES for study in [get_study(name)]
               for c in (study.options_cls, *(e.config_cls for e in study.experiments.values()))]
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name == dest:
                default = f.default if f.default is not dataclasses.MISSING else \
                    (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                if default not in (None, [], ""):
                    return True
    return False


def test_each_study_has_its_own_help_and_bare_study_is_lm(capsys):
    """``study heads --help`` lists the head study's options only; ``study [flags]`` runs the lm study."""
    assert mech_interp.cli.main(["study", "heads", "--help"]) == 0
    heads_help = capsys.readouterr().out
    assert "--model" in heads_help and "--n-windows" not in heads_help and "--datasets" not in heads_help
    assert mech_interp.cli.main(["study", "lm", "--help"]) == 0
    assert "--n-windows" in capsys.readouterr().out
    assert mech_interp.cli.with_default_study(["study", "--model", "m"]) == ["study", "lm", "--model", "m"]
    assert mech_interp.cli.with_default_study(["study"]) == ["study", "lm"]
    assert mech_interp.cli.with_default_study(["study", "--help"]) == ["study", "--help"]
    assert mech_interp.cli.main(["study", "heads", "--n-windows", "3"]) == 2
    assert "--n-windows" in capsys.readouterr().err
