"""The engine-neutral site parser and the two engines that resolve its sites: TransformerLens hook points
(spelled by get_act_name and found in a real model's hook_dict) and timm modules of a ViT."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mech_interp.core.sites import IN_BLOCK, OUTSIDE_BLOCKS, Site, parse_site


@pytest.mark.unit
def test_every_component_round_trips_through_its_name():
    for component in IN_BLOCK:
        for block in (0, 3, 11, 120):
            site = Site(block, component)
            assert parse_site(site.name) == site
    for component in OUTSIDE_BLOCKS:
        site = Site(None, component)
        assert parse_site(site.name) == site
    assert parse_site("blocks.3.attn.hook_pattern") == Site(3, "pattern")
    assert parse_site("blocks.12.hook_resid_post") == Site(12, "resid_post")
    assert parse_site("blocks.0.mlp.hook_post") == Site(0, "post")
    assert parse_site("ln_final.hook_normalized") == Site(None, "final")
    assert Site(3, "attn_scores").pairwise and Site(3, "pattern").pairwise and not Site(3, "z").pairwise


@pytest.mark.unit
@pytest.mark.parametrize("name", [
    "blocks.1.hook_pattern",  # the pattern is the attention's, not the block's
    "blocks.1.attn.hook_resid_pre",
    "blocks.x.hook_resid_pre",
    "blocks.-1.hook_resid_pre",
    "blocks.01.hook_resid_pre",  # another spelling of block 1: refused, so that a name reads back as written
    "blocks.\u0661.hook_resid_pre",  # an Arabic-Indic digit one
    "blocks.1.hook_nothing",
    "blocks.1.hook_resid_post.x",
    "hook_resid_post",
    "ln_final.hook_resid_post",
    "",
])
def test_other_names_are_refused_naming_the_name(name):
    with pytest.raises(ValueError, match=f"unknown hook point {name!r}"):
        parse_site(name)


@pytest.mark.unit
def test_a_site_refuses_a_block_that_does_not_fit_its_component():
    for block, component in ((None, "resid_post"), (-1, "z"), (True, "z"), (2, "final"), (0, "embed")):
        with pytest.raises(ValueError, match="block"):
            Site(block, component)
    with pytest.raises(ValueError, match="unknown site component 'logits'"):
        Site(0, "logits")


@pytest.mark.unit
def test_the_parser_imports_no_model_library():
    code = ("import sys; import mech_interp.core.sites; "
            "print(sorted(m for m in ('torch', 'transformer_lens', 'timm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.integration
def test_transformer_lens_names_are_get_act_name_and_every_hook_point_of_a_model_parses():
    import mech_interp as mi
    from mech_interp.models.hook_names import block_of, hook_name

    for component in IN_BLOCK:
        assert hook_name(Site(4, component)) == Site(4, component).name
    for component in OUTSIDE_BLOCKS:
        assert hook_name(Site(None, component)) == Site(None, component).name
    for name in ("random:gpt2-tiny", "random:llama-tiny"):
        model = mi.load_model(name, device="cpu")
        for point in model.hook_dict:
            site = parse_site(point)
            assert hook_name(site) == point
            assert block_of(point) == (int(point.split(".")[1]) if point.startswith("blocks.") else None)


@pytest.mark.integration
def test_vit_sites_are_hooked_on_the_timm_modules_they_name():
    from vit_hooks import hook_names
    from vit_hooks.hooks import HookedViT
    from vit_hooks.loading import load_vit

    vit = load_vit("random:vit-tiny-reg4")
    hooked = HookedViT(vit.model, vit.entry.img_size)
    modules = {}
    for name in hooked.hook_names:
        where = hook_names.resolve(name)
        assert where.name == name and where.site == parse_site(name)
        modules[name] = hooked.model.get_submodule(where.module)
    assert modules[hook_names.FINAL] is vit.model.norm
    assert modules[hook_names.resid_pre(3)] is modules[hook_names.resid_post(3)] is vit.model.blocks[3]
    assert modules["blocks.3.hook_attn_out"] is vit.model.blocks[3].ls1
    assert modules["blocks.3.hook_mlp_out"] is vit.model.blocks[3].ls2
    assert modules[hook_names.pattern(3)] is vit.model.blocks[3].attn.attn_drop
    assert hook_names.resolve(hook_names.resid_pre(3)).reads_input
    assert not any(hook_names.resolve(n).reads_input for n in hooked.hook_names if "resid_pre" not in n)
    for other in ("blocks.3.hook_resid_mid", "blocks.3.attn.hook_z", "hook_embed"):  # TransformerLens sites a ViT lacks
        with pytest.raises(ValueError, match=f"unknown hook point {other!r}"):
            hook_names.resolve(other)
