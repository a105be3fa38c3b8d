"""Massive activations and attention sinks over training: the trainer's checkpoint series (``--series-interval``) and
the ``emergence`` experiment over a series. A tiny attn_bias model (2 blocks, a key slot) trained 7 steps on the
built-in text with the byte tokenizer gives a series of 3; a planted massive activation gives a series where the
right first massive layer is known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import mech_interp as mi
from mech_interp.data.texts import load_text
from mech_interp.models.planted import PLANT_LAYER
from mech_interp.validation.errors import UsageError

from .cli_runs import assert_refused, run_cli

pytestmark = [pytest.mark.filterwarnings("ignore:no Chromium found"),
              pytest.mark.usefixtures("one_torch_thread")]  # tests/conftest.py says why

SERIES_STEPS = [3, 6, 7]  # every 3 steps, and the last
SEQ_LEN, N_SEQS = 16, 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    text = load_text("builtin").text
    for i in range(16):  # the hash split puts some in val
        (root / f"doc{i:02d}.txt").write_text(text[i * len(text) // 16:(i + 1) * len(text) // 16])
    return root


def tiny_config(corpus: Path, out: Path, **overrides):
    from train_gpt2_bias.config import TrainConfig

    values = {"preset": "tiny", "variant": "attn_bias", "corpus": [str(corpus)], "tokenizer": "byte",
              "data_dir": str(out.parent / "data"), "val_fraction": 0.3, "out": str(out), "progress": False,
              "max_steps": 7, "eval_interval": 7, "ckpt_interval": 4, "n_ctx": 24, "series_interval": 3, **overrides}
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    """A trainer output with a series of 3 checkpoints (steps 3, 6, 7), trained without interruption."""
    from train_gpt2_bias.train import train

    out = tmp_path_factory.mktemp("trained") / "attn_bias"
    train(tiny_config(corpus, out))
    return out


def _weights(step_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(step_dir / "model.safetensors"))


# ---- the trainer's series ----

@pytest.mark.integration  # a tiny model trained in the test
def test_the_trainer_exports_a_loadable_model_every_n_steps_and_at_the_last(trained):
    series = trained / "series"
    assert sorted(p.name for p in series.iterdir()) == [f"step_{s}" for s in SERIES_STEPS]
    for step in SERIES_STEPS:
        record = json.loads((series / f"step_{step}" / "step.json").read_text())
        assert record["step"] == step and record["tokens"] == step * 4 * 24
        assert mi.load_model(str(series / f"step_{step}"), device="cpu").cfg.n_layers == 2
    final = _weights(trained)  # the final export is the last step of the series
    assert all(torch.equal(final[k], v) for k, v in _weights(series / "step_7").items())
    state = torch.load(trained / "ckpt.pt", weights_only=True)
    assert state["step"] == 7  # the resume state is the trainer's own, never a series step
    assert "series/" in json.loads((trained / "manifest.json").read_text())["files"]


@pytest.mark.integration  # a tiny model trained in the test
def test_a_resumed_run_continues_the_series_without_duplicating_or_losing_steps(corpus, trained, tmp_path):
    from train_gpt2_bias.train import train

    cut = tmp_path / "attn_bias"
    train(tiny_config(corpus, cut, stop_after=5))  # state at 5; series step 3 exported
    assert sorted(p.name for p in (cut / "series").iterdir()) == ["step_3"]
    # what a kill after exporting step 6 but before the state of step 6 would leave, and a cut export
    shutil.copytree(cut / "series" / "step_3", cut / "series" / "step_6")
    (cut / "series" / "step_7.tmp").mkdir()
    train(tiny_config(corpus, cut))
    assert sorted(p.name for p in (cut / "series").iterdir()) == [f"step_{s}" for s in SERIES_STEPS]
    for step in SERIES_STEPS:  # bit for bit the uninterrupted run's
        whole, resumed = _weights(trained / "series" / f"step_{step}"), _weights(cut / "series" / f"step_{step}")
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), step


def test_an_out_holding_series_as_a_file_is_refused_before_training(tmp_path):
    from train_gpt2_bias.checkpoint import check_out

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "series").write_text("x")
    with pytest.raises(UsageError, match="holds 'series', which is a regular file: train-gpt2-bias writes a "
                                         "directory by that name"):
        check_out(tmp_path / "run")


def test_series_interval_is_a_count_and_never_part_of_the_resume_identity():
    from train_gpt2_bias.config import TrainConfig

    with pytest.raises(UsageError, match="--series-interval -1"):
        TrainConfig(preset="tiny", series_interval=-1)
    assert "series_interval" not in TrainConfig(preset="tiny", series_interval=5).identity()


# ---- the emergence experiment ----

def _direct(model, seqs: torch.Tensor, n_slots: int, eps: float) -> dict[str, float]:
    """The row's numbers computed in plain PyTorch from ``run_with_cache``: top1 and lower median of |a| of each
    sequence's hidden state, averaged over sequences, at the last block (no massive activation) and their largest
    ratio; each head's attention to position 0 from the queries after it, slots dropped."""
    _, cache = model.run_with_cache(seqs)
    ratios, first = [], []
    for layer in range(model.cfg.n_layers):
        acts = cache[f"blocks.{layer}.hook_resid_post"].abs().flatten(1)  # [seq, pos * d_model]
        top1, median = acts.max(1).values.mean().item(), acts.median(1).values.mean().item()
        ratios.append(top1 / median)
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][..., n_slots:]  # [seq, head, query, pos]
        first.append(pattern[:, :, 1:, 0].mean(-1).mean(0))  # [head]
    heads = torch.stack(first)  # [layer, head]
    return {"top1": top1, "median": median, "top1_over_median": ratios[-1], "max_top1_over_median": max(ratios),
            "sink_share": (heads > eps).float().mean().item(), "attention_to_first_token": heads.mean().item()}


@pytest.mark.integration  # tiny models trained in the test
def test_emergence_of_a_trained_series_equals_a_direct_computation_and_resumes_after_a_kill(trained, tmp_path,
                                                                                             monkeypatch):
    from mech_interp.runs.runner import execute
    from mech_interp.runs.spec import RunSpec
    from mech_interp.studies.followups import emergence as module

    params = {"series": str(trained), "text": "builtin", "n_seqs": N_SEQS, "seq_len": SEQ_LEN, "device": "cpu",
              "sink_eps": 0.1}
    loads = []
    real_load = module.load

    def killed_at_the_second(checkpoint, *args):
        loads.append(checkpoint.label)
        if len(loads) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does; the runner keeps the pieces, as a kill -9 leaves them
        return real_load(checkpoint, *args)

    monkeypatch.setattr(module, "load", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        execute(RunSpec("emergence", None, params, study="followups"), tmp_path / "results")
    loads.clear()
    monkeypatch.setattr(module, "load", lambda checkpoint, *args: loads.append(checkpoint.label) or
                        real_load(checkpoint, *args))
    run_dir, result = execute(RunSpec("emergence", None, params, study="followups"), tmp_path / "results")
    assert loads == ["step_6", "step_7"]  # step_3 came from its piece
    table = result.tables["emergence"]
    assert table["step"].tolist() == SERIES_STEPS and table["tokens"].tolist() == [s * 96 for s in SERIES_STEPS]
    assert table["first_massive_layer"].isna().all() and (table["measured_block"] == 1).all()
    assert result.figures["emergence"].layout.xaxis.title.text == "optimizer step"
    assert (run_dir / "emergence.csv").is_file() and (run_dir / "per_block.parquet").is_file()
    assert "sink_share: share of heads whose mean attention to token 0" in (run_dir / "summary.txt").read_text()

    fresh = module.emergence(module.EmergenceConfig(**params))  # uninterrupted: the resumed rows are the same
    pd.testing.assert_frame_equal(fresh.tables["emergence"], table)
    row = table.set_index("step").loc[6]
    model = mi.load_model(str(trained / "series" / "step_6"), device="cpu")
    seqs = mi.windows(model.tokenizer, load_text("builtin").text, seq_len=SEQ_LEN, n_windows=N_SEQS)
    for name, value in _direct(model, seqs, n_slots=1, eps=0.1).items():
        assert row[name] == pytest.approx(value, rel=1e-5), name


@pytest.mark.integration  # a planted massive activation
def test_a_planted_massive_activation_shows_as_the_first_massive_layer_at_its_checkpoint_only(tmp_path, capsys):
    series = tmp_path / "saved"
    for step, name in ((100, "random:gpt2-tiny"), (200, "planted:gpt2-tiny"), (300, "random:gpt2-tiny")):
        hf = mi.load_hf(name)
        hf.model.save_pretrained(series / f"step_{step}")
        hf.tokenizer.save_pretrained(series / f"step_{step}")
    out = tmp_path / "results"
    models = ",".join(str(series / f"step_{s}") for s in (100, 200, 300))
    code, stdout, stderr = run_cli(["emergence", "--models", models, "--n-seqs", 4, "--seq-len", 256,
                                    "--device", "cpu", "--out", out], capsys)
    assert code == 0, stderr
    (csv,) = out.rglob("emergence.csv")
    table = pd.read_csv(csv)
    assert table["step"].tolist() == [100, 200, 300]
    assert table["first_massive_layer"].tolist()[1] == PLANT_LAYER
    assert table["first_massive_layer"].isna().tolist() == [True, False, True]
    assert "first checkpoint with a massive activation: " in stdout and "(block 2)" in stdout


@pytest.mark.integration  # a tiny series trained by the trainer's command, in a child process
def test_with_no_series_the_default_one_is_trained_once_then_measured(corpus, tmp_path, monkeypatch, capsys):
    """No --series or --models: the trainer's command trains the default series where the guide's command puts it
    (its cpu preset and default variant, here 6 steps on a small corpus with the byte tokenizer, exported every 3),
    then it is measured; run again, it is read as it is."""
    from mech_interp.studies.followups import default_series

    short = ["--preset", "cpu", "--variant", "default", "--corpus", str(corpus), "--tokenizer", "byte",
             "--data-dir", str(tmp_path / "data"), "--val-fraction", "0.3", "--max-steps", "6", "--eval-interval", "6",
             "--series-interval", "3", "--no-progress"]
    monkeypatch.setattr(default_series, "TRAIN_ARGS", short)
    monkeypatch.chdir(tmp_path)
    args = ["emergence", "--n-seqs", "2", "--seq-len", "16", "--device", "cpu", "--figure-format", "none"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    assert "training the default series first (train-gpt2-bias train --preset cpu --variant default" in stdout
    assert (tmp_path / default_series.DEFAULT_SERIES / "series" / "step_6").is_dir()
    [run_dir] = (tmp_path / "results" / "checkpoint-series").glob("emergence__*")
    table = pd.read_csv(run_dir / "emergence.csv")
    assert table["step"].tolist() == [3, 6] and table["n_layers"].tolist() == [4, 4]  # the cpu preset's 4 blocks
    assert "emergence over 2 checkpoints (default series results/train/cpu-series/default)" in stdout

    weights = tmp_path / default_series.DEFAULT_SERIES / "series" / "step_6" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    code, stdout, stderr = run_cli([*args, "--force"], capsys)
    assert code == 0 and "training the default series" not in stdout, stderr  # the trainer was not started
    assert weights.stat().st_mtime_ns == written and "emergence over 2 checkpoints" in stdout


def test_a_refusal_of_the_trainer_is_a_refusal_of_the_default_series(tmp_path, monkeypatch, capsys):
    import subprocess

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 2))
    out = tmp_path / "results"
    code, _, stderr = run_cli(["emergence", "--device", "cpu", "--out", out], capsys)
    assert_refused(code, stderr, "the default series cannot be trained here (train-gpt2-bias refused, above)", out)


@pytest.mark.parametrize("args, needle", [
    (["--models", ""], "empty checkpoint series"),
    (["--series", "{missing}"], "does not exist"),
    (["--series", "{file}"], "is not a directory"),
    (["--series", "{empty}"], "holds no checkpoint series"),
    (["--series", "{empty}", "--models", "random:gpt2-tiny"], "give one"),
    (["--models", "{step_3},random:gpt2-tiny"], "not one model's: '{step_3}' has 2 blocks, 'random:gpt2-tiny' has 4"),
    (["--models", "random:gpt2-tiny,random:gpt2-tiny"], "twice"),
    (["--models", "EleutherAI/pythia-70m@main"], "Pythia-style revisions"),
    (["--models", "EleutherAI/pythia-70m@step1000,step2000"], "the Hugging Face hub is unreachable"),
    (["--series", "{trained}", "--seq-len", "64"], "longer than the context of 'step_3' (24 tokens)"),
])
def test_bad_series_are_refused_in_one_line_before_any_model_loads(args, needle, trained, tmp_path, capsys,
                                                                   monkeypatch):
    from mech_interp.storage import hub
    from mech_interp.studies.followups import emergence as module

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)  # never tried here: the hub is not tested
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(module, "load", lambda *a: pytest.fail("a model loaded before the refusal"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "file": tmp_path / "file", "empty": tmp_path / "empty",
             "trained": trained, "step_3": trained / "series" / "step_3"}
    args = [a.format(**paths) for a in args]
    out = tmp_path / "results"
    code, _, stderr = run_cli(["emergence", *args, "--device", "cpu", "--out", out], capsys)
    assert_refused(code, stderr, needle.format(**paths), out)


def test_hub_revisions_continue_until_an_item_that_is_not_one():
    from mech_interp.studies.followups.checkpoint_series import read_series

    checkpoints = read_series("", ["EleutherAI/pythia-70m@step1000", "step2000", "random:gpt2-tiny"])
    assert [(c.label, c.step, c.hub_name) for c in checkpoints] == [
        ("EleutherAI/pythia-70m@step1000", 1000, "EleutherAI/pythia-70m"),
        ("EleutherAI/pythia-70m@step2000", 2000, "EleutherAI/pythia-70m"), ("random:gpt2-tiny", None, None)]
