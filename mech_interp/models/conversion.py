"""An in-memory Hugging Face model to a ``HookedTransformer`` whose activations equal the HF model's.

No weight processing is applied unless asked: TransformerLens' defaults (fold_ln,
center_writing_weights, ...) change residual values, LayerNorm outputs and logits.

TransformerLens 3.9 builds most configs from the HF architecture, but Gemma 1/2/3 and OLMo 1/2
only from an official hub name with hard-coded sizes. For those families the config below is
written the way TransformerLens writes it for the official names, with every size read from the
model's own HF config, so that a local directory or a GGUF file needs no hub access.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading
from transformer_lens.config.hooked_transformer_config import HookedTransformerConfig
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from ..validation.errors import UsageError
from .architectures import check_hf_architecture
from .engines import HOOKED_TRANSFORMER
from .hf_model import HFModel
from .processing import Processing

# TransformerLens picks its config branch from substrings of the model name before it reads the
# config (e.g. any name containing "llama" is LLaMA, "gemma" is Gemma); a scratch path that
# happened to contain one would be configured as the wrong family.
_NAME_TRIGGERS = ("llama", "gemma", "wav2vec2")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length")


def hooked_from_hf(
    hf: HFModel,
    device: torch.device,
    dtype: torch.dtype,
    processing: Processing = Processing(),
    prepend_bos: bool = False,
    n_devices: int = 1,
) -> HookedTransformer:
    """Convert an in-memory HF model without any hub access.

    TransformerLens reads the config and the weights through a directory name; we give it a
    scratch directory holding only config.json, named neutrally (see ``_NAME_TRIGGERS``).
    """
    config = hf.model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(hf.model).__name__]  # None on models built from a config
    architecture = check_hf_architecture(config["architectures"][0], hf.source, HOOKED_TRANSFORMER)
    if config.get("model_type") == "gpt2":
        config.setdefault("n_ctx", config["n_positions"])  # transformers 5 no longer saves it
    if architecture in POST_NORM_ARCHITECTURES and processing.fold_ln:
        processing = replace(processing, fold_ln=False)  # TransformerLens refuses it the same way: not valid post-norm
    with _neutral_scratch_dir() as cfg_dir:
        (cfg_dir / "config.json").write_text(json.dumps(config))
        if architecture in OWN_CONFIGS:
            cfg_dict = OWN_CONFIGS[architecture](hf.model.config)
            cfg_dict["original_architecture"] = architecture
        else:
            cfg_dict = tl_loading.convert_hf_model_config(str(cfg_dir))
        _check_windows(architecture, config, cfg_dict)
        _check_biases(architecture, hf.model)
        cfg = _finish_config(cfg_dict, config, device, dtype, processing, prepend_bos, n_devices)
        state_dict = tl_loading.get_pretrained_state_dict(str(cfg_dir), cfg, hf.model, dtype=dtype)
    with torch.device(device):  # allocate the (uninitialised) weights where they will live, not on the host first
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **asdict(processing))  # key by key, freeing as it goes
    if n_devices > 1:
        model.move_model_modules_to_device()  # blocks over cfg.n_devices GPUs, as from_pretrained(n_devices=) does
    else:
        model.to(device)
    attach_tokenizer(model, hf.tokenizer)
    model.cfg.source = hf.source  # type: ignore[attr-defined]
    return model


class _neutral_scratch_dir:
    def __enter__(self) -> Path:
        for _ in range(10):  # a random name holds a trigger by chance only
            self._tmp = tempfile.TemporaryDirectory(prefix="mi-")
            path = Path(self._tmp.name) / "model"
            if not any(trigger in str(path).lower() for trigger in _NAME_TRIGGERS):
                path.mkdir()
                return path
            self._tmp.cleanup()
        raise UsageError(f"the temporary directory {tempfile.gettempdir()!r} contains one of "
                         f"{', '.join(_NAME_TRIGGERS)}, which TransformerLens reads as a model family: "
                         "set TMPDIR elsewhere")

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


# TransformerLens' weight converters for these families write zero biases, whatever the checkpoint holds.
_BIASLESS_CONVERTERS = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "ApertusForCausalLM", "OlmoForCausalLM",
    "Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoeForCausalLM",
})


def _check_biases(architecture: str, model: torch.nn.Module) -> None:
    """Refuse a checkpoint with biases (``attention_bias``/``mlp_bias``) its converter would drop."""
    if architecture not in _BIASLESS_CONVERTERS:
        return
    biases = [name for name, _ in model.named_parameters() if name.endswith(".bias")]
    if biases:
        raise UsageError(f"{architecture} with biases ({biases[0]}, ... {len(biases)} in all) cannot be converted: "
                         "TransformerLens' conversion of this family has no biases")


def _check_windows(architecture: str, hf_config: dict[str, Any], cfg_dict: dict[str, Any]) -> None:
    """Refuse a sliding window that HF applies and the TransformerLens config would drop.

    Some TransformerLens branches (Qwen2, Qwen3, ...) configure every layer as global; a checkpoint
    that turns windows on (``use_sliding_window``) would then load with silently different values.
    """
    layer_types = hf_config.get("layer_types") or []
    if not hf_config.get("sliding_window") or "sliding_attention" not in layer_types:
        return
    windowed = bool(cfg_dict.get("use_local_attn"))
    tl_types = cfg_dict.get("attn_types") or ["global"] * len(layer_types)
    dropped = [i for i, (hf_type, tl_type) in enumerate(zip(layer_types, tl_types))
               if hf_type == "sliding_attention" and not (windowed and tl_type == "local")]
    if dropped:
        raise UsageError(f"{architecture} with sliding-window attention on layers {dropped} cannot be converted: "
                         "TransformerLens would attend globally there (turn use_sliding_window off or use the HF model)")


def _finish_config(cfg_dict: dict[str, Any], hf_config: dict[str, Any], device: torch.device,
                   dtype: torch.dtype, processing: Processing, prepend_bos: bool,
                   n_devices: int = 1) -> HookedTransformerConfig:
    """What ``get_pretrained_model_config`` does after building the family's dict, for a model in hand."""
    cfg_dict = dict(cfg_dict)
    cfg_dict["model_name"] = "model"  # load_model names it after the spec
    cfg_dict["tokenizer_name"] = None  # the tokenizer is attached in memory, never reloaded by name
    cfg_dict["init_weights"] = False
    if processing.fold_ln and cfg_dict.get("positional_embedding_type") != "shortformer":
        cfg_dict["normalization_type"] = {"LN": "LNPre", "RMS": "RMSPre"}.get(cfg_dict["normalization_type"],
                                                                            cfg_dict["normalization_type"])
    cfg_dict["device"] = str(device)
    cfg_dict["n_devices"] = n_devices
    cfg_dict["dtype"] = dtype
    cfg_dict["from_checkpoint"] = False
    cfg_dict["default_prepend_bos"] = prepend_bos
    cfg_dict["load_in_4bit"] = False
    cfg_dict["quantization_method"] = None  # GGUF weights arrive dequantized; quantization_config was dropped
    cfg_dict["d_vocab"] = hf_config.get("vocab_size", cfg_dict["d_vocab"])
    context = next((hf_config[k] for k in _CONTEXT_KEYS if isinstance(hf_config.get(k), int)), None)
    if cfg_dict.get("positional_embedding_type") == "rotary" and context:
        # TransformerLens caps some families (Mistral, Qwen3: 2048; Gemma: 8192) for a memory cost it no
        # longer has (its rotary tables grow on demand, up to n_ctx); the cap only made longer inputs fail.
        cfg_dict["n_ctx"] = context
    if cfg_dict["original_architecture"] == "Qwen2ForCausalLM":  # float theta, not TransformerLens' int()
        cfg_dict["rotary_base"] = _rope_theta(hf_config, default=cfg_dict["rotary_base"])
    return HookedTransformerConfig.from_dict(cfg_dict)


def _rope_theta(config: Any, layer_type: str | None = None, default: float = 10000.0) -> float:
    """rope_theta from a transformers 4 (top level) or 5 (``rope_parameters``, maybe per layer type) config."""
    get = config.get if isinstance(config, dict) else lambda key, fallback=None: getattr(config, key, fallback)
    params = get("rope_parameters", None) or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    elif "full_attention" in params:
        params = params["full_attention"] or {}
    return params.get("rope_theta", get("rope_theta", None) or default)


def _rope_params(config: Any, layer_type: str) -> dict:
    params = getattr(config, "rope_parameters", None) or {}
    if layer_type in params:
        return params[layer_type] or {}
    return params


def _attn_types(config: Any) -> list[str]:
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return ["local" if t == "sliding_attention" else "global" for t in layer_types]


def _gemma(config: Any, act_fn: str | None = None) -> dict[str, Any]:
    """TransformerLens' google/gemma-2b|7b dict, sizes from ``config``."""
    n_heads = config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return {
        "d_model": config.hidden_size,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": config.intermediate_size,
        "n_layers": config.num_hidden_layers,
        "n_ctx": config.max_position_embeddings,
        "eps": config.rms_norm_eps,
        "d_vocab": config.vocab_size,
        "act_fn": act_fn or config.hidden_act,  # Gemma 1's MLP reads hidden_act (gelu_pytorch_tanh in transformers 5)
        "initializer_range": config.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": _rope_theta(config),
        "rotary_dim": d_head,
        "positional_embedding_type": "rotary",
        "use_attn_scale": True,
        "n_key_value_heads": config.num_key_value_heads,  # TransformerLens' Gemma weight conversion needs it set
        "gated_mlp": True,
        "final_rms": True,
    }


def _gemma2(config: Any) -> dict[str, Any]:
    """TransformerLens' google/gemma-2-* dict: sandwich norms, soft-capping, alternating sliding windows."""
    cfg = _gemma(config, act_fn=config.hidden_activation)
    local = _attn_types(config)
    cfg.update({
        # HF scales scores by query_pre_attn_scalar**-0.5 (head_dim on 2b/9b, d_model/n_heads on 27b)
        "attn_scale": float(config.query_pre_attn_scalar) ** 0.5,
        "window_size": config.sliding_window,
        "use_local_attn": "local" in local,
        "attn_types": local,
        "attn_scores_soft_cap": config.attn_logit_softcapping or -1.0,
        "output_logits_soft_cap": config.final_logit_softcapping or -1.0,
        "use_normalization_before_and_after": True,
    })
    return cfg


def _gemma3(config: Any) -> dict[str, Any]:
    """TransformerLens' google/gemma-3-* text dict: Gemma 2 plus per-head q/k RMSNorm and two rope bases."""
    cfg = _gemma2(config)
    cfg["use_qk_norm"] = True
    cfg["rotary_base"] = _rope_theta(config, "full_attention", default=1_000_000.0)
    local_theta = _rope_theta(config, "sliding_attention", default=10_000.0)
    if local_theta != cfg["rotary_base"]:
        cfg["rotary_base_local"] = local_theta
    full = _rope_params(config, "full_attention")
    if full.get("rope_type") == "linear":  # 4b and larger: linear scaling on the global layers only
        cfg["rotary_scaling_factor"] = float(full["factor"])
    return cfg


def _olmo(config: Any) -> dict[str, Any]:
    """TransformerLens' allenai/OLMo-*-hf dict: LayerNorm without parameters, optional q/k/v clipping."""
    n_heads = config.num_attention_heads
    if getattr(config, "num_key_value_heads", n_heads) != n_heads:
        raise UsageError(f"OlmoForCausalLM with {config.num_key_value_heads} key/value heads for {n_heads} query "
                         "heads cannot be converted: TransformerLens' OLMo conversion has no grouped-query attention")
    return {
        "d_model": config.hidden_size,
        "d_head": config.hidden_size // n_heads,
        "n_heads": n_heads,
        "d_mlp": config.intermediate_size,
        "n_layers": config.num_hidden_layers,
        "n_ctx": config.max_position_embeddings,
        "eps": 1e-05,  # OlmoLayerNorm hard-codes it
        "d_vocab": config.vocab_size,
        "act_fn": config.hidden_act,
        "initializer_range": config.initializer_range,
        "normalization_type": "LN",
        "rotary_base": _rope_theta(config),
        "attn_types": ["global"] * config.num_hidden_layers,
        "positional_embedding_type": "rotary",
        "gated_mlp": True,
        "clip_qkv": getattr(config, "clip_qkv", None),
    }


def _olmo2(config: Any) -> dict[str, Any]:
    """TransformerLens' allenai/OLMo-2-* dict: post-norm RMS blocks, q/k RMSNorm over all heads."""
    n_heads = config.num_attention_heads
    return {
        "d_model": config.hidden_size,
        "d_head": config.hidden_size // n_heads,
        "n_heads": n_heads,
        "d_mlp": config.intermediate_size,
        "n_layers": config.num_hidden_layers,
        "n_ctx": config.max_position_embeddings,
        "eps": config.rms_norm_eps,
        "d_vocab": config.vocab_size,
        "act_fn": config.hidden_act,
        "initializer_range": config.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": _rope_theta(config, default=500000.0),
        "attn_types": ["global"] * config.num_hidden_layers,
        "positional_embedding_type": "rotary",
        "gated_mlp": True,
    }


def _phi(config: Any) -> dict[str, Any]:
    """TransformerLens' PhiForCausalLM dict; its own branch reads ``partial_rotary_factor`` at the
    top level, where transformers 5 no longer keeps it (it lives in ``rope_parameters``)."""
    if getattr(config, "qk_layernorm", False):
        raise UsageError("PhiForCausalLM with qk_layernorm=true cannot be converted: TransformerLens has no "
                         "LayerNorm on Phi's queries and keys")
    n_heads = config.num_attention_heads
    d_head = config.hidden_size // n_heads
    rope = getattr(config, "rope_parameters", None) or {}
    partial = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    return {
        "d_model": config.hidden_size,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": config.intermediate_size,
        "n_layers": config.num_hidden_layers,
        "n_ctx": config.max_position_embeddings,
        "eps": config.layer_norm_eps,
        "d_vocab": config.vocab_size,
        "act_fn": config.hidden_act,
        "initializer_range": config.initializer_range,
        "normalization_type": "LN",
        "positional_embedding_type": "rotary",
        "rotary_base": _rope_theta(config),
        "use_attn_scale": True,
        "parallel_attn_mlp": True,
        "rotary_dim": int(partial * d_head),  # HF truncates; TransformerLens' round() can differ by one
    }


# HF architecture -> its TransformerLens config, built here: the families TransformerLens configures
# only from an official name (written as it writes them, sizes from the HF config), and Phi.
OWN_CONFIGS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "PhiForCausalLM": _phi,
    "GemmaForCausalLM": _gemma,
    "Gemma2ForCausalLM": _gemma2,
    "Gemma3ForCausalLM": _gemma3,
    "OlmoForCausalLM": _olmo,
    "Olmo2ForCausalLM": _olmo2,
}


def attach_tokenizer(model: HookedTransformer, tokenizer) -> None:
    # HookedTransformer.set_tokenizer reloads the tokenizer by name_or_path (a hub call for names,
    # a slow re-parse for GGUF); we tokenize with explicit BOS handling ourselves and need none of it.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.tokenizer = tokenizer
    model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
