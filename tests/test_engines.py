"""The two model engines (``mech_interp.models.engines``): which one runs, that every engine installed here loads
models whose values are the HF model's, its fast path, trained checkpoints on the bridge, and the refusals.

Runs in both environments (``make test``): in .venv (TransformerLens 3.x: the HookedTransformer and 3.x's beta
bridge) and in .venv-tl4 (TransformerLens 4.x: the bridge only). Tests of one engine skip where it is absent.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import mech_interp as mi
from mech_interp.models import bridge_attention, engines
from mech_interp.models.engines import HOOKED_TRANSFORMER, TRANSFORMER_BRIDGE
from mech_interp.models.hook_names import BRIDGE_NATIVE
from mech_interp.models.tokenizers import byte_tokenizer
from mech_interp.validation.errors import UsageError

from .cli_runs import assert_refused, run_cli
from .support.engines import AVAILABLE

TEXT = "Summer is warm. Winter is cold. The first token sees only itself."
needs_bridge = pytest.mark.skipif(TRANSFORMER_BRIDGE not in AVAILABLE, reason="no TransformerBridge in this environment")
needs_both = pytest.mark.skipif(len(AVAILABLE) < 2, reason="one engine here (TransformerLens 4.x has no HookedTransformer)")


def _resid_posts(model, tokens) -> list[torch.Tensor]:
    kept = []
    hooks = [(f"blocks.{i}.hook_resid_post", lambda t, hook: kept.append(t.detach().clone()))
             for i in range(model.cfg.n_layers)]
    with torch.inference_mode():
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    return kept


def _max_rel(actual, expected) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


# --- which engine runs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "auto"), [("3.9.0", HOOKED_TRANSFORMER), ("4.3.0", TRANSFORMER_BRIDGE),
                                               ("5.0.0", TRANSFORMER_BRIDGE)])
def test_auto_follows_the_installed_transformer_lens(monkeypatch, version, auto):
    monkeypatch.setattr(engines, "transformer_lens_version", lambda: version)
    assert engines.resolve_engine("auto") == auto
    assert engines.resolve_engine(TRANSFORMER_BRIDGE) == TRANSFORMER_BRIDGE  # 3.x has the bridge too (beta)


def test_a_forced_engine_the_installation_lacks_is_refused_naming_the_one_it_has(monkeypatch):
    monkeypatch.setattr(engines, "transformer_lens_version", lambda: "4.3.0")
    with pytest.raises(UsageError, match=r"engine 'hooked_transformer' needs transformer-lens<4 .*4\.3\.0 is installed: "
                                         r"use --engine transformer_bridge"):
        engines.resolve_engine(HOOKED_TRANSFORMER)
    monkeypatch.setattr(engines, "transformer_lens_version", lambda: None)
    with pytest.raises(UsageError, match="transformer-lens is not installed"):
        engines.resolve_engine("auto")
    with pytest.raises(UsageError, match="unknown engine 'hooked': expected one of auto, hooked_transformer, "
                                         "transformer_bridge"):
        engines.resolve_engine("hooked")


def test_engine_flag_is_refused_before_anything_loads(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["layerwise", "--model", "random:llama-tiny", "--engine", "bridge", "--out", out], capsys)
    assert_refused(code, err, "unknown engine 'bridge'", out)
    if HOOKED_TRANSFORMER not in AVAILABLE:
        code, _, err = run_cli(["layerwise", "--model", "random:llama-tiny", "--engine", HOOKED_TRANSFORMER,
                                "--out", out], capsys)
        assert_refused(code, err, "engine 'hooked_transformer' needs transformer-lens<4", out)


@pytest.mark.parametrize("engine", AVAILABLE)
def test_every_manifest_records_the_engine_and_transformer_lens_version(engine, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["layerwise", "--model", "random:llama-tiny", "--device", "cpu", "--engine", engine,
                            "--n-seqs", "1", "--seq-len", "16", "--out", out], capsys)
    assert code == 0, err
    manifest = json.loads(next(out.rglob("manifest.json")).read_text())
    assert manifest["engine"] == {"name": engine, "model_class": engines.ENGINES[engine].model_class,
                                  "transformer_lens": engines.transformer_lens_version()}


# --- the bridge ---------------------------------------------------------------------------------------------------

@needs_bridge
def test_the_bridge_tokenizes_as_the_hf_tokenizer():
    hf = mi.load_hf("random:gpt2-tiny")
    model = mi.load_model("random:gpt2-tiny", device="cpu", engine=TRANSFORMER_BRIDGE)
    for special in (False, True):
        assert model.tokenizer(TEXT, add_special_tokens=special)["input_ids"] == \
            hf.tokenizer(TEXT, add_special_tokens=special)["input_ids"]
    assert model.cfg.original_architecture == "GPT2LMHeadModel"
    assert model.cfg.default_prepend_bos is False


@needs_bridge
def test_the_bridge_registers_the_transformer_lens_names_on_its_own_hook_points():
    model = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE)
    for component, native in BRIDGE_NATIVE.items():
        site = mi.core.sites.Site(None if native.startswith("embed") else 1, component)
        assert model.hook_dict[site.name].name == native.replace("blocks.N.", "blocks.1."), component


@pytest.mark.parametrize("engine", AVAILABLE)
def test_the_studies_hook_each_engines_own_names(engine, monkeypatch):
    from mech_interp.metrics.layer_stats import collect_layer_stats
    from mech_interp.models.hook_names import engine_hook_name

    model = mi.load_model("random:llama-tiny", device="cpu", engine=engine)
    hooked = []
    hooks = model.hooks
    monkeypatch.setattr(model, "hooks", lambda fwd_hooks=(), **kw: hooked.extend(n for n, _ in fwd_hooks) or
                        hooks(fwd_hooks=fwd_hooks, **kw))
    collect_layer_stats(model, [torch.tensor([byte_tokenizer().encode(TEXT)])], progress=False)
    bridge = engine == TRANSFORMER_BRIDGE
    assert hooked == [f"blocks.{i}.hook_out" if bridge else f"blocks.{i}.hook_resid_post" for i in range(4)]
    for component, native in BRIDGE_NATIVE.items():
        site = mi.core.sites.Site(None if native.startswith("embed") else 2, component)
        expected = native.replace("blocks.N.", "blocks.2.") if bridge else site.name
        assert engine_hook_name(model, site.name) == expected, component
    assert engine_hook_name(model, "blocks.2.attn.hook_k") == "blocks.2.attn.hook_k"  # no native entry: the alias


@needs_bridge
@pytest.mark.parametrize("name", ["random:llama-tiny", "planted:gpt2-tiny"])
def test_the_bridge_gives_the_hf_models_residual_stream(name):
    hf = mi.load_hf(name)
    tokens = torch.tensor([hf.tokenizer(TEXT)["input_ids"]])
    with torch.inference_mode():
        hidden = hf.model(tokens, output_hidden_states=True).hidden_states
    for fast_paths in (False, True):
        model = mi.load_model(name, device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=fast_paths)
        kept = _resid_posts(model, tokens)
        for layer in range(len(kept) - 1):  # HF's last hidden state is after the final norm
            assert _max_rel(kept[layer], hidden[layer + 1]) < 1e-5, (name, fast_paths, layer)


@needs_bridge
def test_the_bridge_fast_path_runs_sdpa_unless_scores_or_pattern_are_hooked(monkeypatch):
    tokens = torch.tensor([byte_tokenizer().encode(TEXT)])
    plain = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=False)
    fast = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=True)
    assert bridge_attention.enable_bridge_fast_path(fast) == [0, 1, 2, 3]  # idempotent: already on
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or original(*a, **k))

    def sites(model, extra=()):
        kept = {}
        names = ["blocks.1.attn.hook_z", "blocks.1.attn.hook_q", "blocks.2.hook_resid_post", *extra]
        hooks = [(n, lambda t, hook, n=n: kept.__setitem__(n, t.detach().clone())) for n in names]
        with torch.inference_mode():
            model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
        return kept

    expected = sites(plain)
    with torch.inference_mode():  # asks HF for attentions, which leaves transformers' capturing hooks behind
        fast.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_resid_post"), return_type=None)
    calls.clear()
    got = sites(fast)
    assert len(calls) == 4, "the fused kernel ran in every block (after run_with_cache too)"
    for name in expected:  # the hooks the HF forward fires see what the explicit path gives them
        assert got[name].shape == expected[name].shape and _max_rel(got[name], expected[name]) < 1e-6, name
    calls.clear()
    got = sites(fast, extra=["blocks.1.attn.hook_pattern"])
    assert len(calls) == 3, "the block whose pattern is hooked takes the explicit path, the others the kernel"
    assert got["blocks.1.attn.hook_pattern"].shape == (1, 4, tokens.shape[1], tokens.shape[1])
    bridge_attention.disable_bridge_fast_path(fast)
    calls.clear()
    got = sites(fast)
    assert not calls and all(torch.equal(got[name], expected[name]) for name in expected), "explicit path again"


@needs_bridge
def test_the_bridge_stops_after_the_blocks_when_nothing_reads_the_head(monkeypatch):
    tokens = torch.tensor([byte_tokenizer().encode(TEXT)])
    plain = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=False)
    fast = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=True)
    heads = []  # matmuls onto the vocabulary, counted without a hook (a hook on the head is a reason to run it)
    linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, w, *a, **k: (
        heads.append(1) if w.shape[0] == fast.cfg.d_vocab else None) or linear(x, w, *a, **k))
    with torch.inference_mode():
        residual = fast(tokens, return_type=None, stop_at_layer=fast.cfg.n_layers)
        assert fast(tokens, return_type=None) is None
        assert not heads, "the LM head ran though nothing reads it"
        assert torch.equal(residual, _resid_posts(fast, tokens)[-1])
        normalized = []
        fast.run_with_hooks(tokens, return_type=None,
                            fwd_hooks=[("ln_final.hook_normalized", lambda t, hook: normalized.append(t))])
        assert normalized and heads, "a hook after the blocks: the whole forward runs"
        assert _max_rel(fast(tokens), plain(tokens)) < 1e-5  # logits asked for: the whole forward


@needs_bridge
def test_the_bridge_norm_fast_path_gives_the_bridges_values_and_fires_hooks_when_asked():
    from mech_interp.models import bridge_norm

    tokens = torch.tensor([byte_tokenizer().encode(TEXT)])
    plain = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=False)
    fast = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=False)
    fused = bridge_norm.enable_bridge_norm_fast_path(fast)  # this fast path alone: bit-equal to the bridge's own
    assert sum(type(m) in bridge_norm._PLAIN for m in fast.modules()) == fused
    if engines.transformer_lens_major() >= 4:
        assert fused == 2 * fast.cfg.n_layers + 1  # ln1, ln2 of every block and the final norm
    for a, b in zip(_resid_posts(fast, tokens), _resid_posts(plain, tokens)):
        assert torch.equal(a, b)
    for model in (fast, plain):  # a hooked scale takes the bridge's own path, with its values
        kept = []
        with torch.inference_mode():
            model.run_with_hooks(tokens, return_type=None,
                                 fwd_hooks=[("blocks.1.ln1.hook_scale", lambda t, hook: kept.append(t.clone()))])
        model.kept = kept[0]
    assert torch.equal(fast.kept, plain.kept)


@needs_bridge
def test_the_bridge_linear_fast_path_skips_only_unhooked_projections(monkeypatch):
    from transformer_lens.hook_points import HookPoint

    from mech_interp.models import bridge_linear

    tokens = torch.tensor([byte_tokenizer().encode(TEXT)])
    plain = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=False)
    fast = mi.load_model("random:llama-tiny", device="cpu", engine=TRANSFORMER_BRIDGE, fast_paths=False)
    direct = bridge_linear.enable_bridge_linear_fast_path(fast)  # this fast path alone: bit-equal to the bridge's own
    assert direct == 7 * fast.cfg.n_layers == bridge_linear.enable_bridge_linear_fast_path(fast)  # q k v o gate up down
    for a, b in zip(_resid_posts(fast, tokens), _resid_posts(plain, tokens)):
        assert torch.equal(a, b)
    points = []  # every hook point a forward calls
    original = HookPoint.forward
    monkeypatch.setattr(HookPoint, "forward", lambda self, x: points.append(self.name) or original(self, x))
    names = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_z", "blocks.2.mlp.hook_post", "blocks.2.hook_resid_post"]
    for model in (fast, plain):
        kept = {}
        with torch.inference_mode():
            model.run_with_hooks(tokens, return_type=None, fwd_hooks=[
                (n, lambda t, hook, n=n: kept.__setitem__(n, t.clone())) for n in names])
        model.kept = kept
    assert fast.kept.keys() == plain.kept.keys() == set(names)
    assert all(torch.equal(fast.kept[n], plain.kept[n]) for n in names), "hooked projections take the bridge's path"
    points.clear()
    with torch.inference_mode():
        fast(tokens, return_type=None)
    assert not any(".q.hook" in p or ".mlp.out.hook" in p for p in points), "unhooked projections skip their points"
    fast.blocks[0].attn.q.original_component._hf_hook = object()  # an accelerate-dispatched layer: the bridge's path
    points.clear()
    with torch.inference_mode():
        fast(tokens, return_type=None)
    assert "blocks.0.attn.q.hook_in" in points and "blocks.1.attn.q.hook_in" not in points
    del fast.blocks[0].attn.q.original_component._hf_hook
    bridge_linear.disable_bridge_linear_fast_path(fast)
    assert not any(type(m) in bridge_linear._PLAIN for m in fast.modules())


@pytest.mark.parametrize("mask, causal", [
    (None, True),
    (torch.zeros(1, 1, 3, 3).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), -3e38), True),
    (torch.ones(3, 3, dtype=torch.bool).tril()[None, None], True),
    (torch.zeros(1, 1, 3, 3), False),  # attends everywhere
    (torch.zeros(1, 1, 3, 3).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(0), -3e38), False),
    (torch.zeros(1, 1, 2, 3), False),  # a cached prefix: not a square block
])
def test_only_a_plain_causal_mask_is_left_to_the_kernel(mask, causal):
    assert bridge_attention.pure_causal(mask) is causal


# --- trained checkpoints on the bridge ----------------------------------------------------------------------------

def _checkpoint(path, variant: str = "default") -> dict[str, torch.Tensor]:
    """A trainer checkpoint of a 2-layer GPT-2 written by hand (HookedTransformer names and layouts, random
    weights, non-zero biases), as train_gpt2_bias saves one."""
    from safetensors.torch import save_file

    n_layers, d_model, n_heads, d_mlp, n_ctx, d_vocab = 2, 32, 4, 64, 40, 257
    d_head = d_model // n_heads
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    state = {"embed.W_E": rand(d_vocab, d_model), "pos_embed.W_pos": rand(n_ctx, d_model),
             "ln_final.w": 1 + rand(d_model), "ln_final.b": rand(d_model),
             "unembed.W_U": rand(d_model, d_vocab), "unembed.b_U": torch.zeros(d_vocab)}
    for i in range(n_layers):
        b = f"blocks.{i}."
        state |= {b + "ln1.w": 1 + rand(d_model), b + "ln1.b": rand(d_model), b + "ln2.w": 1 + rand(d_model),
                  b + "ln2.b": rand(d_model), b + "attn.W_O": rand(n_heads, d_head, d_model), b + "attn.b_O": rand(d_model),
                  b + "mlp.W_in": rand(d_model, d_mlp), b + "mlp.b_in": rand(d_mlp), b + "mlp.W_out": rand(d_mlp, d_model),
                  b + "mlp.b_out": rand(d_model), b + "attn.IGNORE": torch.tensor(-1e5), b + "attn.mask": torch.zeros(0, 0)}
        for x in "QKV":
            state[b + f"attn.W_{x}"], state[b + f"attn.b_{x}"] = rand(n_heads, d_model, d_head), rand(n_heads, d_head)
    path.mkdir()
    save_file(state, str(path / "model.safetensors"))
    config = {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "d_head": d_head, "d_mlp": d_mlp,
              "n_ctx": n_ctx, "d_vocab": d_vocab, "act_fn": "gelu", "normalization_type": "LN",
              "positional_embedding_type": "standard", "attention_dir": "causal", "default_prepend_bos": False,
              "original_architecture": f"GPT2-{variant}", "model_name": f"gpt2-{variant}", "eps": 1e-5,
              "variant": variant, "bias": True, "format": "train_gpt2_bias", "format_version": 1,
              "n_prefix_tokens": int(variant == "sink"), "n_key_slots": int(variant == "attn_bias")}
    (path / "hooked_config.json").write_text(json.dumps(config))
    byte_tokenizer().save_pretrained(path / "tokenizer")
    return state


def _reference_gpt2(state: dict[str, torch.Tensor], tokens: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """GPT-2's forward written out on the checkpoint's own (TransformerLens) weight layout: every resid_post."""
    def ln(x, w, b):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, 1e-5)

    x = state["embed.W_E"][tokens] + state["pos_embed.W_pos"][: tokens.shape[1]]
    n = tokens.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    out = []
    for i in range(n_layers):
        b = f"blocks.{i}."
        h = ln(x, state[b + "ln1.w"], state[b + "ln1.b"])
        q, k, v = (torch.einsum("bpm,nmh->bnph", h, state[b + f"attn.W_{c}"]) + state[b + f"attn.b_{c}"][None, :, None]
                   for c in "QKV")
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        z = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v  # [batch, head, pos, d_head]
        x = x + torch.einsum("bnph,nhm->bpm", z, state[b + "attn.W_O"]) + state[b + "attn.b_O"]
        h = torch.nn.functional.gelu(ln(x, state[b + "ln2.w"], state[b + "ln2.b"]) @ state[b + "mlp.W_in"]
                                     + state[b + "mlp.b_in"])
        x = x + h @ state[b + "mlp.W_out"] + state[b + "mlp.b_out"]
        out.append(x)
    return out


@needs_bridge
def test_a_default_variant_checkpoint_loads_on_the_bridge_as_the_gpt2_it_is(tmp_path):
    state = _checkpoint(tmp_path / "ckpt")
    tokens = torch.tensor([byte_tokenizer().encode(TEXT[:40])])
    expected = _reference_gpt2(state, tokens, 2)
    for engine in AVAILABLE:
        model = mi.load_model(str(tmp_path / "ckpt"), device="cpu", engine=engine)
        for layer, (got, want) in enumerate(zip(_resid_posts(model, tokens), expected)):
            assert _max_rel(got, want) < 1e-5, (engine, layer)


@needs_bridge
def test_a_checkpoint_variant_no_hf_architecture_has_is_refused_on_the_bridge(tmp_path, capsys):
    _checkpoint(tmp_path / "ckpt", variant="sink")
    out = tmp_path / "out"
    code, _, err = run_cli(["layerwise", "--model", tmp_path / "ckpt", "--engine", TRANSFORMER_BRIDGE, "--device",
                            "cpu", "--out", out], capsys)
    assert_refused(code, err, "is of variant 'sink', which adds modules no Hugging Face architecture has", out)
    assert "--engine hooked_transformer" in err


# --- refusals that name the engine -------------------------------------------------------------------------------

@needs_bridge
def test_weight_processing_is_refused_on_the_bridge():
    with pytest.raises(UsageError, match="weight processing .* is the hooked_transformer engine's"):
        mi.load_model("random:gpt2-tiny", device="cpu", engine=TRANSFORMER_BRIDGE,
                      processing=mi.Processing(fold_ln=True))


def test_an_experiment_needing_a_hook_the_model_lacks_is_refused_in_one_line():
    from mech_interp.models.context import ModelContext
    from mech_interp.models.run_options import RunOptions
    from mech_interp.runs.spec import RunSpec, resolve

    run = resolve(RunSpec("attention", RunOptions(model="random:gpt2-tiny", device="cpu"), {}, study="lm"))
    lacking = SimpleNamespace(hook_dict={"blocks.0.attn.hook_pattern": None},
                              cfg=SimpleNamespace(original_architecture="OPTForCausalLM"))
    with pytest.raises(UsageError, match=r"experiment 'attention' needs blocks\.L\.attn\.hook_attn_scores, which the "
                                         r"hooked_transformer engine does not give for OPTForCausalLM"):
        run.study.check_loaded(ModelContext(lacking, run.options), run)


@pytest.mark.parametrize("command", [["train", "--preset", "tiny", "--out", "{out}"],
                                     ["experiment", "--preset", "tiny", "--root", "{out}"]])
def test_the_trainer_is_refused_in_one_line_where_transformer_lens_has_no_hooked_transformer(
        command, monkeypatch, tmp_path, capsys):
    import train_gpt2_bias.cli

    monkeypatch.setattr(engines, "transformer_lens_version", lambda: "4.3.0")
    out = tmp_path / "out"
    capsys.readouterr()
    code = train_gpt2_bias.cli.main([part.replace("{out}", str(out)) for part in command])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "builds its variants as HookedTransformers, which TransformerLens 4.0 removed (installed: 4.3.0)" in err
    assert not out.exists()
