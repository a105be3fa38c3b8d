"""Every supported family loads from a local HF directory with activations equal to HF's, on every engine
that claims it (``architectures.ENGINE_FAMILIES``) and is installed here.

For each family a random-init model of that architecture (tiny config, the family's own features
switched on: sliding windows, soft-capping, q/k norms, experts, ALiBi, partial rotary, ...) is
saved as a local directory and loaded through ``load_model``, with and without the fast paths, on
each engine this environment has (.venv: the HookedTransformer and TransformerLens 3.x's beta
bridge; .venv-tl4: TransformerLens 4.x's bridge; ``make test`` runs this module in both). Every
residual stream after a block must equal HF's ``hidden_states``, and the logits HF's logits. A
family an installed engine does not claim must be refused by it in one line naming the engine that
loads it; the docs' table of families (docs/running/models.md) is the one ``scripts/families_table.py`` writes from
the same mapping.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mech_interp as mi
from mech_interp.models.architectures import (
    BRIDGE_FUSED_ARCHITECTURES,
    FUSED_ARCHITECTURES,
    GGUF_ARCHITECTURES,
    SUPPORTED,
    engine_families,
)
from mech_interp.models.engines import HOOKED_TRANSFORMER
from mech_interp.models.gguf import read_header
from mech_interp.models.spec import ModelSpec
from mech_interp.models.tokenizers import byte_tokenizer
from mech_interp.validation.errors import UsageError

from .support.engines import AVAILABLE

ROOT = Path(__file__).resolve().parents[1]

TEXT = "Summer is warm. Winter is cold. The first token sees only itself."
VOCAB = 257  # byte_tokenizer(): 256 bytes + <|endoftext|> (id 256)
CONTEXT = 128
SPECIAL = {"bos_token_id": 256, "eos_token_id": 256, "pad_token_id": 256}
LLAMA_LIKE = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": CONTEXT}
# Large enough that attention is far from uniform and soft-capping bites (HF's 0.02 leaves scores
# ~0.03 and logits ~0.1, where a missing tanh cap changes values by less than the tolerance).
INIT_STD = 0.3
WINDOW = 8  # shorter than TEXT, so a sliding window changes the result

# test id -> (HF architecture, config class, tiny config). Each turns on what its family does
# differently; Mistral appears twice, windowed (explicit path) and global (fused path).
TINY: dict[str, tuple[str, str, dict]] = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {
        "vocab_size": VOCAB, "n_positions": CONTEXT, "n_embd": 64, "n_layer": 2, "n_head": 4}),
    "gpt-neo": ("GPTNeoForCausalLM", "GPTNeoConfig", {
        "vocab_size": VOCAB, "max_position_embeddings": CONTEXT, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
        "attention_types": [[["global", "local"], 1]], "window_size": WINDOW}),
    "opt": ("OPTForCausalLM", "OPTConfig", {
        "vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 128, "num_attention_heads": 4,
        "max_position_embeddings": CONTEXT, "word_embed_proj_dim": 64}),
    "gpt-j": ("GPTJForCausalLM", "GPTJConfig", {
        "vocab_size": VOCAB, "n_positions": CONTEXT, "n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8}),
    "gpt-neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", {
        "vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "max_position_embeddings": CONTEXT, "rotary_pct": 0.25}),
    "bloom": ("BloomForCausalLM", "BloomConfig", {"vocab_size": VOCAB, "hidden_size": 64, "n_layer": 2, "n_head": 4}),
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(LLAMA_LIKE, tie_word_embeddings=True)),
    "mistral-windowed": ("MistralForCausalLM", "MistralConfig", dict(LLAMA_LIKE, sliding_window=WINDOW)),
    "mistral-global": ("MistralForCausalLM", "MistralConfig", dict(LLAMA_LIKE, sliding_window=None)),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", dict(LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(LLAMA_LIKE, tie_word_embeddings=True)),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(LLAMA_LIKE, head_dim=16, tie_word_embeddings=True)),
    "phi": ("PhiForCausalLM", "PhiConfig", {
        "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": CONTEXT, "partial_rotary_factor": 0.5}),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", dict(LLAMA_LIKE)),
    "gemma": ("GemmaForCausalLM", "GemmaConfig", dict(LLAMA_LIKE, num_key_value_heads=1, head_dim=16)),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(
        LLAMA_LIKE, num_hidden_layers=3, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(
        LLAMA_LIKE, num_hidden_layers=3, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}})),
    "apertus": ("ApertusForCausalLM", "ApertusConfig", dict(LLAMA_LIKE)),
    "olmo": ("OlmoForCausalLM", "OlmoConfig", dict(LLAMA_LIKE, num_key_value_heads=4, clip_qkv=0.5)),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", dict(LLAMA_LIKE, num_key_value_heads=4)),
    "olmo3": ("Olmo3ForCausalLM", "Olmo3Config", dict(LLAMA_LIKE, sliding_window=WINDOW,
                                                     layer_types=["sliding_attention", "full_attention"])),
    "olmoe": ("OlmoeForCausalLM", "OlmoeConfig", dict(LLAMA_LIKE, num_experts=4, num_experts_per_tok=2)),
    "gpt-oss": ("GptOssForCausalLM", "GptOssConfig", dict(
        LLAMA_LIKE, head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"])),
    # The families only the bridge loads (architectures.BRIDGE_ONLY_FAMILIES).
    "falcon": ("FalconForCausalLM", "FalconConfig", {
        "vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "new_decoder_architecture": False, "multi_query": True, "max_position_embeddings": CONTEXT}),
    "stablelm": ("StableLmForCausalLM", "StableLmConfig", dict(LLAMA_LIKE)),
    "starcoder2": ("Starcoder2ForCausalLM", "Starcoder2Config", dict(LLAMA_LIKE)),
    "gpt-bigcode": ("GPTBigCodeForCausalLM", "GPTBigCodeConfig", {
        "vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": CONTEXT}),
    "cohere": ("CohereForCausalLM", "CohereConfig", dict(LLAMA_LIKE)),
    "granite": ("GraniteForCausalLM", "GraniteConfig", dict(LLAMA_LIKE)),
    "mpt": ("MptForCausalLM", "MptConfig", {"vocab_size": VOCAB, "d_model": 64, "n_layers": 2, "n_heads": 4,
                                             "max_seq_len": CONTEXT}),
    "smollm3": ("SmolLM3ForCausalLM", "SmolLM3Config", dict(LLAMA_LIKE)),
    "glm": ("GlmForCausalLM", "GlmConfig", dict(LLAMA_LIKE, head_dim=16)),
    "qwen2-moe": ("Qwen2MoeForCausalLM", "Qwen2MoeConfig", dict(
        LLAMA_LIKE, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=32)),
    "exaone4": ("Exaone4ForCausalLM", "Exaone4Config", dict(LLAMA_LIKE)),
    "hunyuan-dense": ("HunYuanDenseV1ForCausalLM", "HunYuanDenseV1Config", dict(LLAMA_LIKE, head_dim=16)),
    "seed-oss": ("SeedOssForCausalLM", "SeedOssConfig", dict(LLAMA_LIKE, head_dim=16)),
}


def save_tiny(case: str, target):
    """A seeded random-init model of ``TINY[case]`` saved as a local HF directory; returns it in eval mode."""
    import transformers

    architecture, config_class, kwargs = TINY[case]
    init = {"init_std" if architecture == "OPTForCausalLM" else "initializer_range": INIT_STD}
    config = getattr(transformers, config_class)(**{**SPECIAL, **init, **kwargs})
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    model.save_pretrained(target)
    byte_tokenizer().save_pretrained(target)
    return model


def count_calls(monkeypatch, module, name: str) -> list:
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def run_hooked(model, tokens):
    """resid_post of every block, captured by plain forward hooks (run_with_cache would hook the
    attention pattern and turn the fused path off), and the logits. HF's last hidden state comes after
    the final norm, so the last block is checked through the logits."""
    seen = {}
    points = model.hook_dict  # by TransformerLens name on either engine (a bridge's modules have their own names)
    handles = [points[n].register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out.detach()))
               for n in (f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers))]
    try:
        with torch.inference_mode():
            logits = model(tokens)
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def assert_close_relative(actual, expected, what, rel=1e-4):
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max() / scale
    assert err <= rel, f"{what}: max |diff| / max |expected| = {err:.2e} > {rel:.0e}"


def test_every_supported_family_has_a_tiny_config():
    assert {architecture for architecture, _, _ in TINY.values()} == set(SUPPORTED)
    assert set(GGUF_ARCHITECTURES.values()) <= set(SUPPORTED)


CLAIMED = [(case, engine) for case in sorted(TINY) for engine in AVAILABLE if TINY[case][0] in engine_families(engine)]
UNCLAIMED = [(case, engine) for case in sorted(TINY) for engine in AVAILABLE
             if TINY[case][0] not in engine_families(engine)]


def expected_fused_layers(model, engine: str, architecture: str) -> int:
    """Blocks whose attention should run the fused kernel on this input: the HookedTransformer's allow-listed
    families in their global layers, the bridge's allow-listed families where the mask is plainly causal (a sliding
    window shorter than TEXT is not)."""
    if engine == HOOKED_TRANSFORMER:
        if architecture not in FUSED_ARCHITECTURES:
            return 0
        return sum(block.attn.attn_type == "global" for block in model.blocks)
    config = model.original_model.config
    windowed = (getattr(config, "sliding_window", None) or CONTEXT) < len(TEXT) and getattr(config, "use_sliding_window", True)
    return 0 if architecture not in BRIDGE_FUSED_ARCHITECTURES or windowed else model.cfg.n_layers


@pytest.mark.parametrize(("case", "engine"), CLAIMED)
def test_local_directory_matches_hf(case, engine, tmp_path, monkeypatch):
    architecture = TINY[case][0]
    hf = save_tiny(case, tmp_path / "tiny")
    tokens = torch.tensor([byte_tokenizer().encode(TEXT)])
    with torch.inference_mode():
        out = hf(tokens, output_hidden_states=True)
    hidden = out.hidden_states
    n_layers = len(hidden) - 1
    for fast_paths in (False, True):
        model = mi.load_model(str(tmp_path / "tiny"), device="cpu", fast_paths=fast_paths, engine=engine)
        assert model.cfg.original_architecture == architecture
        assert model.cfg.n_layers == n_layers
        if model.cfg.positional_embedding_type == "rotary":  # as long a context as HF's, no shorter cap
            assert model.cfg.n_ctx == CONTEXT
        sdpa_calls = count_calls(monkeypatch, torch.nn.functional, "scaled_dot_product_attention")
        seen, logits = run_hooked(model, tokens)
        fused = expected_fused_layers(model, engine, architecture) if fast_paths else 0
        if fused or engine == HOOKED_TRANSFORMER:  # the bridge's explicit path may itself call HF's sdpa on 3.x
            assert len(sdpa_calls) == fused, "fused path not taken, or taken wrongly"
        for layer in range(n_layers - 1):
            assert_close_relative(seen[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1],
                                  f"{architecture} {engine} fast_paths={fast_paths} resid_post {layer}")
        assert_close_relative(logits, out.logits, f"{architecture} {engine} fast_paths={fast_paths} logits")


@pytest.mark.parametrize(("case", "engine"), UNCLAIMED)
def test_a_family_an_engine_does_not_claim_is_refused_naming_the_one_that_loads_it(case, engine, tmp_path, capsys):
    from .cli_runs import assert_refused, run_cli

    save_tiny(case, tmp_path / "tiny")
    out = tmp_path / "out"
    code, _, err = run_cli(["layerwise", "--model", tmp_path / "tiny", "--engine", engine, "--device", "cpu",
                            "--out", out], capsys)
    assert_refused(code, err, f"architecture {TINY[case][0]!r} cannot be loaded by", out)
    assert "transformer-lens" in err


def test_the_docs_table_of_families_is_the_one_written_from_the_engine_table():
    script = ROOT / "scripts" / "families_table.py"
    table = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.strip()
    page = ROOT / "docs" / "running" / "models.md"
    assert table in page.read_text(), f"{page}'s table of families is stale: python {script}"


# GGUF architecture -> (HF architecture, config class, tiny config). The configs keep what a GGUF
# header cannot carry at its default (GPT-2's n_positions, Qwen3's head_dim, Gemma's soft-caps and
# query_pre_attn_scalar), since transformers rebuilds the config from the header.
TINY_GGUF: dict[str, tuple[str, str, dict]] = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {"vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4}),
    "llama": ("LlamaForCausalLM", "LlamaConfig", LLAMA_LIKE),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", LLAMA_LIKE),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", LLAMA_LIKE),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", LLAMA_LIKE),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(LLAMA_LIKE, head_dim=16, sliding_window=WINDOW)),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(LLAMA_LIKE, head_dim=16, sliding_window=WINDOW)),
    "bloom": ("BloomForCausalLM", "BloomConfig", {"vocab_size": VOCAB, "hidden_size": 64, "n_layer": 2, "n_head": 4}),
}


def _to_gguf_layout(arch: str, name: str, weight, config: dict):
    """Undo what transformers' GGUF reader does to this tensor (llama.cpp's convert step)."""
    import numpy as np

    if arch == "llama" and (".attn_q." in name or ".attn_k." in name):  # rotary halves -> interleaved pairs
        heads = config["num_key_value_heads"] if ".attn_k." in name else config["num_attention_heads"]
        return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
            weight.shape)
    if arch in ("gemma2", "gemma3") and "norm.weight" in name:  # llama.cpp stores Gemma's 1 + w
        return weight + 1
    if arch == "gpt2" and any(k in name for k in ("attn_qkv.weight", "ffn_down.weight", "ffn_up.weight",
                                                   "attn_output.weight")):  # Conv1D -> Linear layout
        return weight.T
    if arch == "bloom" and "attn_qkv" in name:  # per-head [q, k, v] -> [all q; all k; all v]
        heads, width = config["n_head"], config["hidden_size"]
        qkv = weight.reshape(heads, 3, width // heads, *weight.shape[1:])
        return np.concatenate([qkv[:, i].reshape(width, *weight.shape[1:]) for i in range(3)])
    return weight


def write_gguf(model, arch: str, path) -> None:
    """``model`` as an F32 GGUF file with the byte tokenizer, named as transformers' reader expects."""
    import gguf
    import numpy as np
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    config = model.config.to_dict()
    config["rope_theta"] = (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    config.setdefault("n_ctx", config.get("n_positions"))
    config.setdefault("feed_forward_length", 4 * config.get("n_embd", 0))
    writer = gguf.GGUFWriter(str(path), arch)
    for key, hf_key in GGUF_CONFIG_MAPPING[arch].items():
        value = config.get(hf_key) if hf_key else None
        if isinstance(value, int) and not isinstance(value, bool):
            writer.add_uint32(f"{arch}.{key}", value)
        elif isinstance(value, float):
            writer.add_float32(f"{arch}.{key}", value)
    vocab = sorted(byte_tokenizer().get_vocab(), key=byte_tokenizer().get_vocab().get)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types([3 if token == "<|endoftext|>" else 1 for token in vocab])
    writer.add_token_scores([0.0] * len(vocab))  # and no merges: a byte-level vocabulary needs none
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(256)
    writer.add_pad_token_id(256)
    names = get_gguf_hf_weights_map(model, TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config))
    state = model.state_dict()
    for gguf_name, hf_name in names.items():
        weight = _to_gguf_layout(arch, gguf_name, state[hf_name].float().numpy(), config)
        writer.add_tensor(gguf_name, np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_every_gguf_architecture_has_a_tiny_config():
    assert set(TINY_GGUF) == set(GGUF_ARCHITECTURES)
    assert all(TINY_GGUF[arch][0] == GGUF_ARCHITECTURES[arch] for arch in TINY_GGUF)


@pytest.mark.parametrize("arch", sorted(TINY_GGUF))
def test_gguf_file_matches_hf(arch, tmp_path, monkeypatch):
    import transformers

    monkeypatch.setenv("MECH_INTERP_CACHE", "off")
    architecture, config_class, kwargs = TINY_GGUF[arch]
    config = getattr(transformers, config_class)(**{**SPECIAL, "initializer_range": INIT_STD, **kwargs})
    torch.manual_seed(0)
    hf = getattr(transformers, architecture)(config).eval()
    write_gguf(hf, arch, tmp_path / "tiny.gguf")
    tokens = torch.tensor([byte_tokenizer().encode(TEXT)])
    with torch.inference_mode():
        out = hf(tokens, output_hidden_states=True)
    for engine in AVAILABLE:
        model = mi.load_model(str(tmp_path / "tiny.gguf"), device="cpu", fast_paths=True, engine=engine)
        assert model.cfg.original_architecture == architecture
        seen, logits = run_hooked(model, tokens)
        for layer in range(model.cfg.n_layers - 1):
            assert_close_relative(seen[f"blocks.{layer}.hook_resid_post"], out.hidden_states[layer + 1],
                                  f"{arch} GGUF {engine} resid_post {layer}")
        assert_close_relative(logits, out.logits, f"{arch} GGUF {engine} logits")


@pytest.mark.parametrize(("architecture", "config_class", "extra", "refusal"), [
    # TransformerLens' Qwen2 config has no windows; Llama's conversion writes zero biases.
    ("Qwen2ForCausalLM", "Qwen2Config", {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
     r"Qwen2ForCausalLM with sliding-window attention on layers \[1\] cannot be converted"),
    ("LlamaForCausalLM", "LlamaConfig", {"attention_bias": True},
     r"LlamaForCausalLM with biases \(model.layers.0.self_attn.q_proj.bias, ... 8 in all\) cannot be converted"),
])
@pytest.mark.skipif(HOOKED_TRANSFORMER not in AVAILABLE, reason="the HookedTransformer conversion needs TransformerLens 3.x")
def test_variant_transformer_lens_would_get_wrong_is_refused(architecture, config_class, extra, refusal, tmp_path):
    """A checkpoint of a supported family using a feature the HookedTransformer conversion would silently drop."""
    import transformers

    config = getattr(transformers, config_class)(**SPECIAL, **LLAMA_LIKE, **extra)
    getattr(transformers, architecture)(config).save_pretrained(tmp_path / "variant")
    byte_tokenizer().save_pretrained(tmp_path / "variant")
    with pytest.raises(UsageError, match=refusal):
        mi.load_model(str(tmp_path / "variant"), device="cpu", engine=HOOKED_TRANSFORMER)


def test_unsupported_directory_fails_in_one_line_before_loading(tmp_path):
    target = tmp_path / "mamba"
    target.mkdir()
    (target / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"], "model_type": "mamba"}))
    (target / "model.safetensors").write_bytes(b"not read")  # never opened: the check comes first
    with pytest.raises(UsageError) as err:
        ModelSpec.parse(str(target))
    message = str(err.value)
    assert "\n" not in message
    assert "'MambaForCausalLM'" in message
    assert all(arch in message for arch in SUPPORTED)


def test_saved_encoder_model_is_refused(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path / "bert")
    with pytest.raises(UsageError, match="'BertForMaskedLM' cannot be loaded"):
        mi.load_model(str(tmp_path / "bert"), device="cpu")


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def test_unsupported_gguf_fails_before_dequantizing(tmp_path, monkeypatch):
    path = tmp_path / "mamba-tiny.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
    header += _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("mamba")
    header += _gguf_string("mamba.block_count") + struct.pack("<I", 4) + struct.pack("<I", 2)
    path.write_bytes(header)

    import transformers

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("transformers was asked to read the GGUF")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_dequantizing)
    monkeypatch.setenv("MECH_INTERP_CACHE", "off")
    assert read_header(path).block_count == 2  # the header itself reads fine; parsing refuses the architecture
    with pytest.raises(UsageError, match="architecture 'mamba' cannot be loaded"):
        ModelSpec.parse(str(path))
    with pytest.raises(UsageError) as err:
        mi.load_model(str(path), device="cpu")
    message = str(err.value)
    assert "\n" not in message
    assert "'mamba'" in message and "llama" in message
