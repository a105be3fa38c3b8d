"""The vision study's experiments through ``vit-hooks`` on tiny models: results written as data, the
evaluation pipeline against a computation by hand, the interventions' counts, skipping and rerunning,
and bad input refused in one line before anything loads or is written."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import mech_interp.viz.writing as writing
from vit_hooks import cli
from vit_hooks.hooks import HookedViT
from vit_hooks.linear_head import head_features, load_linear_head
from vit_hooks.loading import load_vit

from .test_vit_hooks import _images

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:no Chromium found")]


def run_vit_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _head(tmp_path, d_model=48):
    torch.manual_seed(0)
    path = tmp_path / "head.pth"
    torch.save({"linear.weight": torch.randn(1000, 2 * d_model), "linear.bias": torch.randn(1000)}, path)
    return path


def test_fix_reg_mean_top1_equals_a_computation_by_hand(tmp_path, capsys):
    images, head, out = _images(tmp_path, n=6), _head(tmp_path), tmp_path / "out"
    code, stdout, err = run_vit_cli(
        [
            "fix-reg-mean",
            "--model",
            "random:vit-tiny-reg4",
            "--images",
            images,
            "--head",
            head,
            "--means",
            "measure",
            "--batch-size",
            "4",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    run = next((out / "random-vit-tiny-reg4").iterdir())
    table = pd.read_parquet(run / "fix_reg_mean.parquet")
    assert pd.read_csv(run / "fix_reg_mean.csv")["condition"].tolist() == ["original", "fix_reg_mean"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["identity"]["config"]["means"] == "measure" and manifest["images"]["n_labelled"] == 6
    assert {"fix_reg_mean.html", "summary.txt"} <= set(manifest["files"])
    # by hand: the head on concat[CLS, mean patch] of the unmodified model
    vit = load_vit("random:vit-tiny-reg4")
    hooked = HookedViT(vit.model, 56)
    linear = load_linear_head(head, 48)
    from vit_hooks.images import open_images

    imgs = open_images(images)
    batch = torch.stack([imgs.load(i, vit.preprocessing.eval) for i in range(6)])
    with torch.inference_mode():
        pred = linear(head_features(hooked(batch), hooked.roles)).argmax(1)
    labels = torch.tensor([i.label for i in imgs.items])
    original = table.set_index("condition").loc["original"]
    assert original.top1 == pytest.approx(100 * float((pred == labels).float().mean()))
    assert original.agreement == 100 and original.cos_cls == pytest.approx(1)
    fixed = table.set_index("condition").loc["fix_reg_mean"]
    assert 0 < fixed.cos_cls < 1  # the registers of a random model vary with the image: the features move
    assert "| random:vit-tiny-reg4 |" in stdout


def test_massive_reset_on_the_planted_register(tmp_path, capsys):
    images, out = _images(tmp_path, n=6), tmp_path / "out"
    code, stdout, err = run_vit_cli(
        ["massive-reset", "--model", "planted:vit-tiny-reg4", "--images", images, "--n-ref", "2", "--out", out], capsys
    )
    assert code == 0, err
    run = next((out / "planted-vit-tiny-reg4").iterdir())
    table = pd.read_parquet(run / "massive_reset.parquet").set_index("condition")
    assert table.loc["set_zero", "replaced"] == 4 and table.loc["set_mean", "replaced"] == 4  # one entry per image
    assert table.loc["set_mean", "cos_cls"] == pytest.approx(1, abs=1e-6)  # the planted value is constant: mean = value
    assert table.loc["set_zero", "cos_cls"] < 0.9999
    reference = pd.read_parquet(run / "reference_massive.parquet")
    assert reference[["role", "dim"]].drop_duplicates().values.tolist() == [["reg1", 7]]
    assert "massive reset at block 0 output" in stdout


@pytest.mark.png
def test_runs_skip_rerun_and_write_data_and_figures(tmp_path, capsys, monkeypatch):
    images, out = _images(tmp_path, n=3), tmp_path / "out"
    args = ["layerwise", "--model", "planted:vit-tiny-reg4", "--images", images, "--out", out]
    code, stdout, err = run_vit_cli(args, capsys)
    assert code == 0 and "[done]" in stdout, err
    run = next((out / "planted-vit-tiny-reg4").iterdir())
    for name in ("layerwise", "top_entries", "massive_entries", "by_role"):
        assert (run / f"{name}.parquet").is_file() and (run / f"{name}.csv").is_file()
    assert (run / "layerwise.html").is_file() and (out / "plotly.min.js").is_file()
    assert (run / "layerwise.png").is_file() == writing.png_export_available()
    summary = pd.read_parquet(run / "layerwise.parquet")
    assert summary["top1"].tolist() == pytest.approx([600] * 4, abs=0.1)
    by_role = pd.read_parquet(run / "by_role.parquet")
    assert set(by_role["kind"]) == {"cls", "register", "patch"}
    monkeypatch.setattr(writing, "png_export_available", lambda: False)  # PNGs checked once is enough
    code, stdout, _ = run_vit_cli(args, capsys)
    assert code == 0 and "[skip]" in stdout
    code, stdout, _ = run_vit_cli(args + ["--k", "2"], capsys)  # another configuration: its own directory
    assert code == 0 and "[done]" in stdout and len(list((out / "planted-vit-tiny-reg4").iterdir())) == 2


def test_feature_view_register_means_and_attention(tmp_path, capsys):
    images, out = _images(tmp_path, n=3), tmp_path / "out"
    common = ["--model", "planted:vit-tiny-reg4", "--images", images, "--out", out]
    assert run_vit_cli(["feature-view", *common], capsys)[0] == 0
    fv = next(p for p in (out / "planted-vit-tiny-reg4").iterdir() if p.name.startswith("feature_view"))
    massive = pd.read_parquet(fv / "massive_entries.parquet")
    assert massive[["role", "dim"]].values.tolist() == [["reg1", 7]]
    grid = pd.read_parquet(fv / "patch_grid.parquet")
    assert set(grid["dim"]) == {7} and len(grid) == 16 and {"row", "col"} <= set(grid.columns)
    assert run_vit_cli(["register-means", *common, "--no-augment"], capsys)[0] == 0
    rm = next(p for p in (out / "planted-vit-tiny-reg4").iterdir() if p.name.startswith("register_means"))
    saved = torch.load(rm / "register_means.pt", map_location="cpu")
    assert sorted(saved) == [0, 1, 2, 3] and saved[2][1, 7] == pytest.approx(600, abs=0.1)
    code, stdout, err = run_vit_cli(["attention", *common], capsys)
    assert code == 0, err
    at = next(p for p in (out / "planted-vit-tiny-reg4").iterdir() if p.name.startswith("attention"))
    heads = pd.read_parquet(at / "head_attention.parquet")
    # the massive token is register 1 at every block's input: the two scores are the same numbers
    pd.testing.assert_series_equal(heads["massive"], heads["reg1"], check_names=False)
    assert (heads["n_images_with_massive"] == 3).all()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["layerwise", "--model", "no-such-vit"], "unknown model 'no-such-vit'"),
        (["layerwise", "--model", ""], "--model '' is not allowed"),
        (["layerwise", "--model", "vit_small_patch14_dinov2@/nonexistent.pth"], "does not exist"),
        (["layerwise", "--model", "resnet50"], "only timm VisionTransformer"),
        (["layerwise", "--images", "/nonexistent/folder"], "does not exist"),
        (["layerwise", "--n-images", "0"], "--n-images 0 is not allowed"),
        (["layerwise", "--img-size", "3", "--model", "random:vit-tiny"], "--img-size 3 is not allowed"),
        (["layerwise", "--min-ratio", "nan"], "criterion needs finite"),
        (["layerwise", "--device", "tpu"], "unknown device"),
        (["layerwise", "--device", "cuda:7"], "is not available here"),
        (["layerwise", "--head", "/nonexistent/head.pth"], "does not exist"),
        (["feature-view", "--model", "random:vit-tiny", "--block", "4"], "--block 4 is out of range"),
        (["feature-view", "--block", "-1"], "--block -1 is not allowed"),
        (["fix-reg-mean", "--model", "random:vit-tiny-reg4", "--means", "average"], "--means 'average' is not allowed"),
        (["massive-reset", "--n-ref", "1"], "--n-ref 1 leaves no image to evaluate"),
        (["upstream-means", "--sizes", "huge"], "--sizes 'huge' is not allowed"),
        (["layerwise", "--k", "x"], "invalid int value"),
        ([], "no command given"),
    ],
)
def test_bad_input_is_refused_in_one_line(tmp_path, capsys, args, needle):
    images = _images(tmp_path, n=1)
    if args and "--images" not in args and args[0] != "upstream-means":
        args = args + ["--images", images]
    out = tmp_path / "out"
    code, _, err = run_vit_cli(args + (["--out", out] if args else []), capsys)
    errors = [line for line in err.splitlines() if line.startswith("vit-hooks: error:")]
    assert code == 2, err
    assert len(errors) == 1 and needle in errors[0], err
    assert "Traceback" not in err and not out.exists()


def test_bad_head_shape_and_means_file_are_refused(tmp_path, capsys):
    images, out = _images(tmp_path, n=1), tmp_path / "out"
    head = _head(tmp_path, d_model=10)
    code, _, err = run_vit_cli(
        ["fix-reg-mean", "--model", "random:vit-tiny-reg4", "--images", images, "--head", head, "--out", out], capsys
    )
    assert code == 2 and "takes 20 inputs; the model needs 2 x 48 = 96" in err and not out.exists()
    means = tmp_path / "means.pt"
    torch.save({0: torch.zeros(4, 48)}, means)
    code, _, err = run_vit_cli(
        ["fix-reg-mean", "--model", "random:vit-tiny-reg4", "--images", images, "--means", means, "--out", out], capsys
    )
    assert code == 2 and "are for 1 blocks x [4, 48], the model has 4 blocks" in err and not out.exists()


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vit_hooks", "models"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("dinov2-vits14-imgfocus"), done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "vit_hooks", "layerwise", "--n-images", "0"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.startswith("vit-hooks: error: --n-images 0 is not allowed")


def test_models_and_help_list_what_is_there(capsys):
    code, stdout, _ = run_vit_cli(["models"], capsys)
    assert code == 0 and "dinov2-vits14-imgfocus" in stdout and "planted:vit-tiny-reg4" in stdout
    assert cli.main(["fix-reg-mean", "--help"]) == 0
    assert "--means" in capsys.readouterr().out


def test_batch_runs_models_x_experiments_and_skips_finished_runs(tmp_path, capsys):
    images, out = _images(tmp_path, n=3), tmp_path / "out"
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'[defaults]\nimages = "{images}"\n\n[[runs]]\nmodels = ["planted:vit-tiny-reg4", "random:vit-tiny"]\n'
        'experiments = ["layerwise"]\nparams = { k = 2 }\n\n[[runs]]\nmodels = ["planted:vit-tiny-reg4"]\n'
        'experiments = ["register_means"]\noptions = { n_images = 2 }\n'
    )
    code, stdout, err = run_vit_cli(["batch", config, "--out", out], capsys)
    assert code == 0, err
    assert "3 runs: 3 run now, 0 already complete" in stdout
    assert (next((out / "random-vit-tiny").glob("layerwise__*k=2")) / "manifest.json").is_file()
    assert (next((out / "planted-vit-tiny-reg4").glob("register_means__*n_images=2*")) / "register_means.pt").is_file()
    code, stdout, _ = run_vit_cli(["batch", config, "--out", out], capsys)
    assert code == 0 and "3 runs: 0 run now, 3 already complete" in stdout


@pytest.mark.parametrize(
    "text, needle",
    [
        (
            '[[runs]]\nmodels = ["random:vit-tiny"]\nexperiments = ["layerwise"]\nparams = { kk = 2 }\n',
            "'kk' is not a parameter of layerwise",
        ),
        ('[[runs]]\nmodels = ["random:vit-tiny"]\nexperiments = ["nope"]\n', "unknown experiment 'nope'"),
        (
            '[[runs]]\nmodels = ["random:vit-tiny"]\nexperiments = ["layerwise"]\noptions = { n_images = "4" }\n',
            "--n-images '4' is not allowed",
        ),
        (
            '[[runs]]\nmodels = ["random:vit-tiny", "no-such-vit"]\nexperiments = ["layerwise"]\n',
            "runs[0]: unknown model",
        ),
        (
            '[[runs]]\nmodels = ["random:vit-tiny"]\nexperiments = ["feature_view"]\nparams = { block = 9 }\n',
            "--block 9 is out of range",
        ),
        ("[[runs]]\nmodels = []\n", "runs[0].models must be a non-empty list"),
        ("runs = 3\n", "needs at least one [[runs]] entry"),
        ("[[runs]\n", "malformed config file"),
    ],
)
def test_bad_batch_files_are_refused_before_anything_runs(tmp_path, capsys, text, needle):
    images = _images(tmp_path, n=1)
    config = tmp_path / "bad.toml"
    config.write_text(f'[defaults]\nimages = "{images}"\n\n{text}' if "[[runs]]\nmodels" in text else text)
    out = tmp_path / "out"
    code, _, err = run_vit_cli(["batch", config, "--out", out], capsys)
    assert code == 2 and needle in err and err.count("vit-hooks: error:") == 1, err
    assert not out.exists()
