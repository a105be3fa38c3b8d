"""The real ViT and the shared data: the embedded DINOv2 ViT-S's conversion against its ONNX graph,
upstream's register-mean files, the evaluation pipeline on the sample images, and notebook 03."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from vit_hooks import hook_names
from vit_hooks.hooks import HookedViT
from vit_hooks.images import open_images
from vit_hooks.loading import load_vit
from vit_hooks.register_means import RegisterMeans

from .conftest import shared_data

pytestmark = pytest.mark.acceptance

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_vit_registers.ipynb"


@pytest.fixture(scope="module")
def embedded():
    pytest.importorskip("onnxruntime")
    vit = load_vit("dinov2-vits14-imgfocus")
    return vit, HookedViT(vit.model, vit.entry.img_size)


def test_embedded_vit_matches_its_onnx_graph(embedded):
    from vit_hooks.parity import embedded_parity

    vit, hooked = embedded
    images = open_images(shared_data("imagenet-samples"), n_images=2)
    batch = torch.stack([images.load(i, vit.preprocessing.eval) for i in range(2)])
    table = embedded_parity(hooked, batch)
    assert len(table) == 2 + 4 * 12  # embeddings, final, and 4 tensors per block
    tolerance = 5e-5 * table["max_abs_onnx"].clip(lower=1)  # float32 matmuls in another order
    assert (table["max_abs_diff"] <= tolerance).all(), table[table["max_abs_diff"] > tolerance]
    assert table["max_abs_onnx"].max() > 10  # the comparison is not between near-zero tensors


def test_conversion_cache_is_written_once_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    from vit_hooks.embedded_onnx import converted_state_dict

    monkeypatch.setenv("MECH_INTERP_CACHE", str(tmp_path))
    first = converted_state_dict()
    (cached,) = (tmp_path / "vit").iterdir()
    assert cached.name.startswith("vit_s_focus-") and not list((tmp_path / "vit").glob("*.tmp"))
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short, as a kill or a full disk would leave it
    with pytest.warns(UserWarning, match="rebuilding it"):
        again = converted_state_dict()
    assert sorted(first) == sorted(again) and all(torch.equal(first[k], again[k]) for k in first)
    assert cached.stat().st_size > 80e6  # rewritten whole
    assert first["pos_embed"].shape == (1, 1 + 37 * 37, 384)  # as stored: resampled to the input size when built


def test_embedded_vit_shape_and_roles(embedded):
    vit, hooked = embedded
    assert vit.entry.n_registers == 0 and hooked.roles.n_tokens == 1 + 16 * 16
    assert sum(p.numel() for p in vit.model.parameters()) == pytest.approx(22.0e6, rel=0.02)  # ViT-S/14


@pytest.mark.parametrize(
    "size, blocks, dim", [("small", 12, 384), ("base", 12, 768), ("large", 24, 1024), ("giant", 40, 1536)]
)
def test_upstream_register_means_load_on_the_cpu(size, blocks, dim):
    shared_data("dinov2-reg-feat-mean")
    means = RegisterMeans.upstream(size)
    assert means.n_blocks == blocks and means.shape == (4, dim)
    assert all(m.device.type == "cpu" and m.dtype == torch.float32 for m in means.means.values())
    assert means.means[0].abs().max() < 0.6  # block 0's input: the learned register tokens
    if size == "giant":  # the reference numbers (REFERENCE.md): register 2, dim 179
        assert means.means[1][2, 179] == pytest.approx(-474.5, abs=0.1)
        assert means.means[39][2, 179] == pytest.approx(-1155.3, abs=0.1)


def test_evaluation_pipeline_on_the_sample_images_with_a_tiny_model_and_random_head(tmp_path, capsys):
    from .test_vit_study import _head, run_vit_cli

    samples = shared_data("imagenet-samples")
    out = tmp_path / "out"
    code, stdout, err = run_vit_cli(
        [
            "fix-reg-mean",
            "--model",
            "random:vit-tiny-reg4",
            "--images",
            samples,
            "--n-images",
            "12",
            "--head",
            _head(tmp_path),
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    run = next((out / "random-vit-tiny-reg4").iterdir())
    table = pd.read_parquet(run / "fix_reg_mean.parquet")
    assert (table["n_labelled"] == 12).all() and table["top1"].between(0, 100).all()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["images"]["layout"] == "flat" and manifest["model"]["n_registers"] == 4


def test_notebook_03_runs_and_shows_what_it_claims():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    shared_data("imagenet-samples")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('import json as _json\nprint("PROBE " + _json.dumps(PROBE))'))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    text = next(o["text"] for o in nb.cells[-1].outputs if o.get("name") == "stdout" and "PROBE " in o["text"])
    probe = json.loads(text.split("PROBE ", 1)[1])
    assert probe["parity_max_rel"] < 5e-5
    assert probe["embedded_massive"] == 0  # DINOv2-S without registers: nothing passes the paper's criterion
    assert probe["planted"] == [["reg1", 7]]
    assert probe["fix_reg_mean_own_changed"] is False
    assert probe["giant_reg2_dim179_last"] == pytest.approx(-1155.3, abs=0.1)
    figures = sum(
        "application/vnd.plotly.v1+json" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert figures >= 4, figures
    assert hook_names.resid_post(11) in probe["hook_names"]


def test_the_shipped_batch_file_is_valid():
    from mech_interp.runs.batch import expand

    shared_data("imagenet-samples")
    runs = expand(Path(__file__).resolve().parent.parent / "configs" / "vit" / "sweep.toml", ("vit",))
    assert [r.experiment.name for r in runs][:3] == ["layerwise", "attention", "layerwise"]
    assert runs[2].options.img_size == 448 and len(runs) == 8
