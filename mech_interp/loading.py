"""One entry point from a model spec to a ``HookedTransformer`` whose activations equal the HF model's.

A spec is one of: a registered name (``smollm2-135m``, ``random:gpt2-tiny``, see
``model_registry.list_models()``), a local Hugging Face directory, a ``.gguf`` file, or a
TransformerLens/hub model name (``gpt2``), which needs network or a filled HF cache.

No weight processing is applied unless asked: TransformerLens' defaults (fold_ln,
center_writing_weights, ...) change residual values, LayerNorm outputs and logits.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading

from .errors import UsageError
from .fused_attention import enable_fused_attention
from .hub import hub_reachable, offline_mode
from .model_registry import HFModel, build_registered, is_registered, list_models
from .weight_layout import use_linear_layout

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class Processing:
    """TransformerLens weight processing; all off keeps activations equal to the HF model's."""

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False
    refactor_factored_attn_matrices: bool = False


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES and not device.startswith("cuda:"):
        raise UsageError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)} or cuda:N")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but no CUDA device is available: use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def model_slug(spec: str) -> str:
    """A directory-safe name for results: ``/models/Llama-2-7b/`` -> ``Llama-2-7b``."""
    path = Path(spec)
    name = path.stem if spec.endswith(".gguf") else (path.name if path.exists() else spec)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-") or "model"


def model_source(spec: str) -> str:
    """What ``spec`` names, independent of the working directory: an absolute path for local files."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if not is_registered(spec) and path.exists() else spec


def load_hf(spec: str, dtype: torch.dtype = torch.float32) -> HFModel:
    """The Hugging Face model behind a local spec (registered name, directory or GGUF file), on the
    CPU in ``dtype`` (casting before or after the conversion gives the same values; before halves
    the host memory a large half-precision model needs)."""
    if is_registered(spec):
        return _cast(build_registered(spec), dtype)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UsageError(f"GGUF file {spec!r} does not exist")
        from .gguf_loading import load_gguf

        return _cast(load_gguf(path.resolve()), dtype)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model directory {spec!r} has no config.json: expected a Hugging Face model directory")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        model.eval()
        return HFModel(model=model, tokenizer=AutoTokenizer.from_pretrained(path), source=f"local:{path.resolve()}")
    raise UsageError(_unknown_model_message(spec))


def layer_count(spec: str) -> int | None:
    """Number of blocks of a local ``spec`` without converting it (``None`` for hub names), so a
    batch can refuse a layer out of range before its first run writes anything."""
    path = Path(spec).expanduser()
    if is_registered(spec):
        return build_registered(spec).model.config.num_hidden_layers
    if path.suffix == ".gguf" and path.is_file():
        from gguf import GGUFReader

        fields = GGUFReader(path).fields
        arch = fields["general.architecture"]
        count = fields[f"{bytes(arch.parts[arch.data[0]]).decode()}.block_count"]
        return int(count.parts[count.data[0]][0])
    if path.is_dir() and (path / "config.json").is_file():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path).num_hidden_layers
    return None


def _cast(hf: HFModel, dtype: torch.dtype) -> HFModel:
    if dtype != torch.float32:
        hf.model.to(dtype)
    return hf


def _unknown_model_message(spec: str) -> str:
    return (
        f"unknown model {spec!r}: expected one of {', '.join(list_models())}, "
        "a local Hugging Face directory, a .gguf file, or a TransformerLens model name such as gpt2"
    )


def _is_hub_name(spec: str) -> bool:
    try:
        tl_loading.get_official_model_name(spec)
    except ValueError:
        return False
    return True


def load_model(
    spec: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    processing: Processing = Processing(),
    prepend_bos: bool = False,
    fused_attention: bool = True,
) -> HookedTransformer:
    """Load ``spec`` as a HookedTransformer in eval mode.

    ``prepend_bos`` becomes ``cfg.default_prepend_bos`` so that ``model.to_tokens`` in a notebook
    tokenizes as the experiments do. Weights are laid out in memory as HF's (``weight_layout``) so
    that TransformerLens' forward copies none of them; values and shapes are unchanged.
    ``fused_attention`` swaps in the fused kernel for layers whose attention scores/pattern nobody
    hooks; hooked layers take TransformerLens' own path.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    local = is_registered(spec) or Path(spec).expanduser().exists() or spec.endswith(".gguf")
    if local:
        model = hooked_from_hf(load_hf(spec, torch_dtype), torch_device, torch_dtype, processing, prepend_bos)
    elif _is_hub_name(spec):
        model = _from_hub(spec, torch_device, torch_dtype, processing, prepend_bos)
    else:
        raise UsageError(_unknown_model_message(spec))
    model.cfg.model_name = model_slug(spec)
    model.eval()
    use_linear_layout(model)
    if fused_attention:
        enable_fused_attention(model)
    return model


def _from_hub(spec, device, dtype, processing, prepend_bos) -> HookedTransformer:
    if not offline_mode() and not hub_reachable():
        raise UsageError(
            f"cannot load {spec!r}: the Hugging Face hub is unreachable; pass a local HF directory or a .gguf file "
            "to --model (or, with the model in your HF cache, set HF_HUB_OFFLINE=1)"
        )
    try:
        return HookedTransformer.from_pretrained(
            spec, device=str(device), dtype=dtype, default_prepend_bos=prepend_bos, **asdict(processing)
        )
    except OSError as err:
        raise UsageError(
            f"cannot load {spec!r} from the Hugging Face hub ({type(err).__name__}): without network, "
            "download it elsewhere and pass its local directory or a .gguf file to --model"
        ) from err


def hooked_from_hf(
    hf: HFModel,
    device: torch.device,
    dtype: torch.dtype,
    processing: Processing = Processing(),
    prepend_bos: bool = False,
) -> HookedTransformer:
    """Convert an in-memory HF model without any hub access.

    TransformerLens builds its config from a directory name or a hub name; we give it a scratch
    directory holding only config.json, named neutrally because TransformerLens also guesses the
    architecture from substrings such as "llama" in the name.
    """
    config = hf.model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(hf.model).__name__]  # None on models built from a config
    if config.get("model_type") == "gpt2":
        config.setdefault("n_ctx", config["n_positions"])  # transformers 5 no longer saves it
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = Path(tmp) / "model"
        cfg_dir.mkdir()
        (cfg_dir / "config.json").write_text(json.dumps(config))
        cfg = tl_loading.get_pretrained_model_config(
            str(cfg_dir), hf_cfg=config, fold_ln=processing.fold_ln, device=str(device),
            dtype=dtype, default_prepend_bos=prepend_bos,
        )
        state_dict = tl_loading.get_pretrained_state_dict(str(cfg_dir), cfg, hf.model, dtype=dtype)
    cfg.tokenizer_name = None  # the scratch directory is gone; the tokenizer is attached below
    with torch.device(device):  # allocate the (uninitialised) weights where they will live, not on the host first
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **asdict(processing))  # key by key, freeing as it goes
    model.to(device)
    _attach_tokenizer(model, hf.tokenizer)
    model.cfg.source = hf.source  # type: ignore[attr-defined]
    return model


def _attach_tokenizer(model: HookedTransformer, tokenizer) -> None:
    # HookedTransformer.set_tokenizer reloads the tokenizer by name_or_path (a hub call for names,
    # a slow re-parse for GGUF); we tokenize with explicit BOS handling ourselves and need none of it.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.tokenizer = tokenizer
    model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
