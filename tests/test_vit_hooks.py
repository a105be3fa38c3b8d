"""vit_hooks on tiny random-init timm ViTs: hook sites, token roles, Fix-Reg-Mean, the planted register
activation, register means, preprocessing and the model registry."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from PIL import Image

from mech_interp.runs.runner import check_runs
from mech_interp.runs.spec import RunSpec, resolve
from vit_hooks import hook_names
from vit_hooks.configs import ViTOptions
from vit_hooks.fix_reg_mean import FixRegMean
from vit_hooks.hooks import HookedViT
from vit_hooks.images import open_images
from vit_hooks.layer_stats import collect_layer_stats
from vit_hooks.loading import load_vit
from vit_hooks.preprocessing import Preprocessing
from vit_hooks.register_means import RegisterMeans, measure
from vit_hooks.registry import PLANT, list_models, parse_model


def _images(tmp_path, n=4, size=(80, 64)):
    """A flat folder of random images named like ImageNet samples (class ids 0, 10, 20, ...)."""
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo().label_names()
    gen = torch.Generator().manual_seed(1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{wnids[10 * i]}_thing{i}.png")
    return folder


@pytest.fixture(scope="module")
def tiny():
    vit = load_vit("random:vit-tiny-reg4")
    return vit, HookedViT(vit.model, vit.entry.img_size)


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(0))


@pytest.mark.unit
def test_hook_names_are_transformer_lens_names():
    from transformer_lens.utils import get_act_name

    for kind in hook_names.BLOCK_KINDS:
        for block in (0, 7):
            assert hook_names.act_name(kind, block) == get_act_name(kind, block)
            assert hook_names.parse(get_act_name(kind, block)) == (kind, block)
    for bad in ("blocks.1.hook_pattern", "blocks.x.hook_resid_pre", "blocks.1.attn.hook_resid_pre", "hook_embed"):
        with pytest.raises(ValueError):
            hook_names.parse(bad)


@pytest.mark.integration
def test_captures_equal_forward_intermediates_and_final_features(tiny, batch):
    vit, hooked = tiny
    names = [hook_names.resid_post(b) for b in range(hooked.n_blocks)] + [hook_names.FINAL]
    final, cache = hooked.run_with_cache(batch, names)
    with torch.inference_mode():
        ref_final, inter = vit.model.forward_intermediates(batch, output_fmt="NLC", return_prefix_tokens=True)
    assert len(inter) == hooked.n_blocks
    for b, (patches, prefix) in enumerate(inter):
        got = cache[hook_names.resid_post(b)]
        assert torch.equal(got[:, : hooked.roles.n_prefix], prefix)
        assert torch.equal(got[:, hooked.roles.n_prefix :], patches)
    assert torch.equal(cache[hook_names.FINAL], ref_final) and torch.equal(final, ref_final)
    # resid_pre of block b+1 is resid_post of block b; resid_post = resid_pre + attn_out + mlp_out
    _, more = hooked.run_with_cache(
        batch, [hook_names.act_name(k, 1) for k in ("resid_pre", "attn_out", "mlp_out", "resid_post")]
    )
    assert torch.equal(more["blocks.1.hook_resid_pre"], cache["blocks.0.hook_resid_post"])
    summed = more["blocks.1.hook_resid_pre"] + more["blocks.1.hook_attn_out"] + more["blocks.1.hook_mlp_out"]
    torch.testing.assert_close(summed, more["blocks.1.hook_resid_post"], rtol=0, atol=1e-6)


@pytest.mark.integration
def test_pattern_hook_gives_probabilities_and_restores_the_fused_path(tiny, batch):
    vit, hooked = tiny
    attn = vit.model.blocks[2].attn
    fused_before = attn.fused_attn
    baseline = hooked(batch)
    out, cache = hooked.run_with_cache(batch, [hook_names.pattern(2)])
    pattern = cache[hook_names.pattern(2)]
    assert pattern.shape == (3, vit.entry.n_heads, hooked.roles.n_tokens, hooked.roles.n_tokens)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    # the probabilities from the block's own input, computed by hand
    _, pre = hooked.run_with_cache(batch, [hook_names.resid_pre(2)])
    x = vit.model.blocks[2].norm1(pre[hook_names.resid_pre(2)])
    q, k, _ = attn.qkv(x).reshape(3, -1, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(pattern, ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, baseline, rtol=1e-5, atol=1e-5)  # explicit path = fused path
    assert attn.fused_attn == fused_before


@pytest.mark.integration
def test_interventions_act_and_hooks_leave_nothing_behind(tiny, batch):
    vit, hooked = tiny
    baseline = hooked(batch)

    def zero_patch(acts, hook):
        out = acts.clone()
        out[:, -1] = 0
        return out

    with hooked.hooks([(hook_names.resid_post(0), zero_patch)]):
        changed = hooked(batch)
    assert not torch.allclose(changed, baseline)
    assert torch.equal(hooked(batch), baseline)  # removed on exit
    handle = hooked.add_hook(hook_names.act_name("mlp_out", 1), lambda acts, hook: acts * 0)
    assert not torch.allclose(hooked(batch), baseline)
    handle.remove()
    handle.remove()  # twice is harmless
    assert torch.equal(hooked(batch), baseline)
    with pytest.raises(ValueError, match="out of range"):
        with hooked.hooks([(hook_names.resid_post(0), zero_patch), ("blocks.9.hook_resid_post", zero_patch)]):
            pass
    assert torch.equal(hooked(batch), baseline)  # nothing attached when one name is bad
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in vit.model.modules())


@pytest.mark.integration
def test_token_roles_follow_timm_layout(tiny):
    _, hooked = tiny
    roles = hooked.roles
    assert roles.n_registers == 4 and roles.grid == (4, 4) and roles.n_tokens == 21
    assert [roles.name(p) for p in (0, 1, 4, 5, 6, 20)] == [
        "cls",
        "reg0",
        "reg3",
        "patch(0,0)",
        "patch(0,1)",
        "patch(3,3)",
    ]
    table = roles.table()
    assert (table["kind"] == "register").sum() == 4 and table.loc[9, ["row", "col"]].tolist() == [1, 0]


@pytest.mark.integration
def test_planted_register_activation_is_detected_on_its_register_and_dim(tmp_path):
    vit = load_vit("planted:vit-tiny-reg4")
    hooked = HookedViT(vit.model, vit.entry.img_size)
    images = open_images(_images(tmp_path))
    stats = collect_layer_stats(hooked, images, vit.preprocessing.eval)
    massive = stats.massive
    assert set(massive["layer"]) == set(range(hooked.n_blocks))  # from block 0's output on
    assert set(massive["role"]) == {f"reg{PLANT['register']}"} and set(massive["dim"]) == {PLANT["dim"]}
    assert set(massive["register"]) == {PLANT["register"]} and (massive["count"] == len(images)).all()
    assert stats.first_massive_layer() == 0
    # the unplanted twin has none
    plain = load_vit("random:vit-tiny-reg4")
    assert collect_layer_stats(HookedViT(plain.model, 56), images, plain.preprocessing.eval).massive.empty


@pytest.mark.integration
def test_device_path_of_the_image_pass_equals_the_host_path(tmp_path):
    """The GPU path of the recorder (forced here on the CPU) gives the image pass the host path's
    tables, also when a loose criterion makes far more candidates than the recorder keeps on the
    device, so that each batch must run again."""
    import pandas as pd

    from mech_interp.core import transfer_mode
    from mech_interp.core.criterion import MassiveCriterion

    vit = load_vit("planted:vit-tiny-reg4")
    hooked = HookedViT(vit.model, vit.entry.img_size)
    images = open_images(_images(tmp_path))
    loose = MassiveCriterion(min_abs=0.0, min_ratio=2.0)  # every entry above twice the median: hundreds per image
    host = collect_layer_stats(hooked, images, vit.preprocessing.eval, criterion=loose)
    assert host.massive["count"].sum() > 64 * len(images)
    transfer_mode.set_deferred_transfer("always")
    try:
        device = collect_layer_stats(hooked, images, vit.preprocessing.eval, criterion=loose)
    finally:
        transfer_mode.set_deferred_transfer("auto")
    for a, b in ((host.summary, device.summary), (host.top_entries, device.top_entries), (host.massive, device.massive)):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)


@pytest.mark.integration
def test_fix_reg_mean_overwrites_exactly_the_registers_of_every_block(tiny, batch):
    vit, hooked = tiny
    n = hooked.n_blocks
    gen = torch.Generator().manual_seed(3)
    means = RegisterMeans({b: torch.randn(4, 48, generator=gen) * 10 for b in range(n)}, "test")
    fix = FixRegMean(means)
    names = [hook_names.resid_pre(b) for b in range(n)]
    before, after = {}, {}

    def keeper(store):
        def keep(acts, hook):
            store[hook.name] = acts.clone()

        return keep

    # pre-hooks run in the order they were attached: one capture before each write, one after
    with hooked.hooks(
        [(name, keeper(before)) for name in names] + fix.hooks() + [(name, keeper(after)) for name in names]
    ):
        hooked(batch)
    others = [0, *range(5, 21)]  # CLS and the patches
    for b, name in enumerate(names):
        assert torch.equal(after[name][:, 1:5], means.means[b].expand(3, -1, -1))
        assert torch.equal(after[name][:, others], before[name][:, others])
        assert not torch.equal(after[name][:, 1:5], before[name][:, 1:5])
    assert fix.replaced == n * 3 * 4 * 48


@pytest.mark.integration
def test_fix_reg_mean_with_an_images_own_registers_changes_nothing(tiny, batch):
    """Means taken from the very image evaluated (one image, no augmentation) reproduce its registers
    at every block, so the output must equal the original exactly."""
    vit, hooked = tiny
    one = batch[:1]
    _, cache = hooked.run_with_cache(one, [hook_names.resid_pre(b) for b in range(hooked.n_blocks)])
    own = RegisterMeans({b: cache[hook_names.resid_pre(b)][0, 1:5] for b in range(hooked.n_blocks)}, "own")
    with hooked.hooks(FixRegMean(own).hooks()):
        assert torch.equal(hooked(one), hooked.model.forward_features(one))


@pytest.mark.integration
def test_measured_register_means(tiny, tmp_path):
    vit, hooked = tiny
    images = open_images(_images(tmp_path, n=5))
    means = measure(hooked, images, vit.preprocessing, augment=True, seed=0, batch_size=2)
    assert means.n_blocks == 4 and means.shape == (4, 48) and means.n_images == 5
    assert torch.equal(means.means[0], vit.model.reg_token[0])  # block 0's input registers are the parameters
    # by hand: the mean over the same augmented images
    gen = torch.Generator().manual_seed(0)
    batch = torch.stack([vit.preprocessing.augment(Image.open(i.path), gen) for i in images.items])
    _, cache = hooked.run_with_cache(batch, [hook_names.resid_pre(3)])
    torch.testing.assert_close(means.means[3], cache[hook_names.resid_pre(3)][:, 1:5].double().mean(0).float())
    again = measure(hooked, images, vit.preprocessing, augment=True, seed=0, batch_size=5)
    torch.testing.assert_close(again.means[3], means.means[3])  # same seed, same draws, any batching
    other = measure(hooked, images, vit.preprocessing, augment=True, seed=1)
    assert not torch.allclose(other.means[3], means.means[3])
    path = tmp_path / "means.pt"
    means.save(path)
    loaded = RegisterMeans.load(path)
    assert all(torch.equal(loaded.means[b], means.means[b]) for b in range(4))


@pytest.mark.unit
def test_preprocessing_is_dinov2_eval_transform():
    pre = Preprocessing(224, 224 / 256)
    img = Image.new("RGB", (512, 300), (124, 116, 104))  # ~ the ImageNet mean
    t = pre.eval(img)
    assert t.shape == (3, 224, 224) and pre.resize_to == 256
    assert t.abs().max() < 0.01
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(pre.augment(img, gen_a), pre.augment(img, gen_b))


@pytest.mark.unit
def test_image_folders_and_labels(tmp_path):
    flat = open_images(_images(tmp_path, n=3))
    assert flat.layout == "flat" and [i.label for i in flat.items] == [0, 10, 20]
    tree = tmp_path / "tree"
    for wnid in ("n01440764", "unknown_class"):
        (tree / wnid).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(tree / wnid / "a.jpg")
    folder = open_images(tree)
    assert folder.layout == "imagefolder" and [i.label for i in folder.items] == [0, -1]
    assert len(open_images(tree, n_images=1)) == 1


@pytest.mark.integration
def test_registry_metadata_equals_the_built_models():
    for name in ("random:vit-tiny", "random:vit-tiny-reg4", "planted:vit-tiny-reg4"):
        entry = parse_model(name)
        model = load_vit(name).model
        assert (len(model.blocks), model.embed_dim, model.num_reg_tokens, model.blocks[0].attn.num_heads) == (
            entry.n_blocks,
            entry.d_model,
            entry.n_registers,
            entry.n_heads,
        )
        assert HookedViT(model, entry.img_size).roles.n_tokens == entry.n_tokens
    # hub names: shape from a build on the meta device, no download
    for size, blocks, dim in (("small", 12, 384), ("giant", 40, 1536)):
        registered = parse_model(f"vit_{size}_patch14_reg4_dinov2.lvd142m")
        assert (registered.n_blocks, registered.d_model, registered.n_registers) == (blocks, dim, 4)
    meta = parse_model("vit_base_patch16_clip_224.openai")
    assert (meta.n_blocks, meta.d_model, meta.n_registers, meta.img_size, meta.kind) == (12, 768, 0, 224, "hub")
    assert "dinov2-vits14-imgfocus" in list_models()


@pytest.mark.integration
def test_local_checkpoint_loads_into_its_timm_architecture(tmp_path):
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        source = timm.create_model("test_vit", pretrained=False, num_classes=0)  # timm's own tiny test ViT
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    options = ViTOptions(model=f"test_vit@{path}", images=str(_images(tmp_path, n=1)))
    check_runs([resolve(RunSpec("layerwise", options, study="vit"))])  # the checkpoint check lets it through
    vit = load_vit(f"test_vit@{path}")
    assert vit.entry.kind == "file" and vit.entry.slug == "weights"
    state = vit.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.state_dict().items())
    hooked = HookedViT(vit.model, vit.entry.img_size)
    x = torch.randn(1, 3, vit.entry.img_size, vit.entry.img_size)
    with torch.inference_mode():
        assert torch.equal(hooked(x), source.eval().forward_features(x))
    assert hooked.roles.grid == source.patch_embed.grid_size


@pytest.mark.unit
def test_hub_models_are_refused_at_once_when_the_hub_is_unreachable(monkeypatch):
    import mech_interp.storage.hub
    from mech_interp.validation.errors import UsageError
    from vit_hooks.registry import require_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(mech_interp.storage.hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(UsageError, match="hub is unreachable.*vit_small_patch14_reg4_dinov2@weights.pth"):
        require_hub(parse_model("vit_small_patch14_reg4_dinov2.lvd142m"))
    require_hub(parse_model("random:vit-tiny"))  # local models never ask
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    require_hub(parse_model("vit_small_patch14_reg4_dinov2.lvd142m"))  # the HF cache is the user's to fill


@pytest.mark.integration
def test_an_interrupted_evaluation_resumes_where_it_stopped(tiny, tmp_path):
    from mech_interp.core.massive_reset import SetZero
    from vit_hooks.evaluation import Resume, compare_conditions

    vit, hooked = tiny
    images = open_images(_images(tmp_path, n=6))
    head = torch.nn.Linear(96, 1000)
    zero = SetZero(hook_names.resid_post(1))
    conditions = {"set_zero": [zero.as_hook()]}
    full = compare_conditions(hooked, images, vit.preprocessing.eval, conditions, head=head, batch_size=2)

    class Pieces(dict):  # a RunWriter's load_piece / save_piece (JSON snapshots), in memory
        def load_piece(self, key):
            return json.loads(self[str(key)]) if str(key) in self else None

        def save_piece(self, key, value):
            self[str(key)] = json.dumps(value)

    pieces, seen = Pieces(), []

    def stop_at_third_batch(acts, hook):
        seen.append(acts.shape[0])
        if len(seen) == 3:
            raise KeyboardInterrupt
        return acts

    zero = SetZero(hook_names.resid_post(1))
    conditions = {"set_zero": [zero.as_hook(), (hook_names.resid_post(0), stop_at_third_batch)]}
    resume = Resume(pieces, {"evaluation": "test"}, [zero], every=1)
    with pytest.raises(KeyboardInterrupt):
        compare_conditions(hooked, images, vit.preprocessing.eval, conditions, head=head, batch_size=2, resume=resume)
    assert pieces.load_piece({"evaluation": "test"})["n_images"] == 4  # two batches saved
    zero_again = SetZero(hook_names.resid_post(1))
    conditions["set_zero"][0] = zero_again.as_hook()
    resumed = compare_conditions(
        hooked,
        images,
        vit.preprocessing.eval,
        conditions,
        head=head,
        batch_size=2,
        resume=Resume(pieces, {"evaluation": "test"}, [zero_again], every=1),
    )
    assert len(seen) == 4  # the third batch again, never the first two
    pd.testing.assert_frame_equal(resumed, full)
