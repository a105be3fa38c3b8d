"""One entry point from a model spec to a hooked model in eval mode: a ``HookedTransformer`` or a
``TransformerBridge``, whichever engine runs (``engines.resolve_engine``).

A spec is a registered name (``list_models()``), a local Hugging Face directory, a trained checkpoint
directory (``hooked_config.json`` + weights, built by the builder mech_interp's own table
``models/checkpoint.FORMATS`` gives for its format: never code the file names), a ``.gguf`` file,
or a TransformerLens/hub model name (``gpt2``), which needs network or a filled HF cache.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import torch

from ..storage.hub import hub_reachable, offline_mode
from ..validation.device_names import check_device, check_dtype
from ..validation.errors import UsageError
from .engines import AUTO, HOOKED_TRANSFORMER, TRANSFORMER_BRIDGE, resolve_engine
from .hub_names import known_hub_name
from .registry import list_models
from .spec import ModelSpec

if TYPE_CHECKING:  # TransformerLens is imported when a model is built: device checks need only torch
    from .hooked_model import HookedModel
    from .processing import Processing

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """The torch device of a device name, refused in one line when the name is unknown or this machine lacks it."""
    check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (int(device[5:]) if ":" in device else 0) >= count:
            have = f"cuda:0..cuda:{count - 1}" if count else "no CUDA device"
            raise UsageError(f"device {device!r} is not available here (this machine has {have}): use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available here: use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    return DTYPES[check_dtype(dtype)]


def unknown_model_message(text: str) -> str:
    return (f"unknown model {text!r}: expected one of {', '.join(list_models())}, "
            "a local Hugging Face directory, a .gguf file, or a TransformerLens model name such as gpt2")


def load_model(
    spec: str | ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "float32",
    processing: Processing | None = None,
    prepend_bos: bool = False,
    fast_paths: bool = False,
    engine: str = AUTO,
    device_map: str | None = None,
    max_memory: str | None = None,
) -> HookedModel:
    """Load ``spec`` as a HookedTransformer or a TransformerBridge (``engine``; ``auto`` follows the installed
    TransformerLens) in eval mode.

    ``prepend_bos`` becomes ``cfg.default_prepend_bos`` so that ``model.to_tokens`` in a notebook
    tokenizes as the experiments do. ``fast_paths`` (opt-in; the CLI turns it on) lays weights out
    in memory as HF's (``weight_layout``) and routes the attention of allow-listed classes through
    the fused kernel whenever nobody hooks its scores or pattern (``fused_attention``, or
    ``bridge_attention`` on the bridge); values are unchanged either way. ``device_map``
    (``placement.device_map``) splits the model over the machine's devices instead of putting it on
    ``device``: a HookedTransformer's blocks over ``n_devices`` GPUs, the bridge's HF model dispatched
    by accelerate (``max_memory``, e.g. "20GiB", caps each device).

    ```python
    >>> import mech_interp as mi
    >>> model = mi.load_model("random:gpt2-tiny", device="cpu")
    >>> model.cfg.n_layers, model.cfg.d_model
    (4, 64)

    ```
    """
    from .processing import Processing

    engine = resolve_engine(engine)
    processing = processing if processing is not None else Processing()
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    if engine == TRANSFORMER_BRIDGE and processing != Processing():
        raise UsageError(f"weight processing ({processing}) is the hooked_transformer engine's: the transformer_bridge "
                         "engine runs the HF weights as they are (use --engine hooked_transformer, or no processing)")
    split = _device_map(device_map, device)
    torch_device = resolve_device(device if split is None else split.single or "auto")
    torch_dtype = resolve_dtype(dtype)
    if spec.kind == "hub":
        check_hub_model(spec.text)
    if engine == HOOKED_TRANSFORMER:
        n_devices = split.n_devices(engine) if split is not None else 1
        model = _hooked_transformer(spec, torch_device, torch_dtype, processing, prepend_bos, n_devices)
    else:
        model = _bridge(spec, torch_device, torch_dtype, prepend_bos, split, max_memory)
    model.cfg.model_name = spec.slug
    model.eval()
    if fast_paths:
        _enable_fast_paths(model, engine)
    return model


def _device_map(device_map: str | None, device: str):
    if device_map is None:
        return None
    from .placement.device_map import parse_device_map

    if device != "auto":
        raise UsageError(f"--device {device} and --device-map {device_map} both say where the model goes: give one")
    return parse_device_map(device_map)


def _hooked_transformer(spec: ModelSpec, device, dtype, processing, prepend_bos, n_devices: int = 1) -> HookedModel:
    from .conversion import hooked_from_hf
    from .hf_loading import load_hf
    from .processing import Processing

    if spec.kind == "hub":
        return _from_hub(spec.text, device, dtype, processing, prepend_bos, n_devices)
    if spec.kind == "checkpoint":
        from .checkpoint import load_checkpoint

        if processing != Processing():
            raise UsageError(f"checkpoint {spec.text!r}: weight processing ({processing}) is not supported for "
                             "trained checkpoints; load them unprocessed")
        if n_devices > 1:
            raise UsageError(f"checkpoint {spec.text!r} loads on one device: drop --device-map")
        return load_checkpoint(spec.path, spec.text, device, dtype, prepend_bos)
    return hooked_from_hf(load_hf(spec, dtype), device, dtype, processing, prepend_bos, n_devices)


def _bridge(spec: ModelSpec, device, dtype, prepend_bos, split=None, max_memory: str | None = None) -> HookedModel:
    from .bridge import bridge_from_hf, load_hub_hf
    from .hf_loading import load_hf

    if spec.kind == "checkpoint":
        from .checkpoint_bridge import hf_from_checkpoint

        hf = hf_from_checkpoint(spec.path, spec.text, dtype)
    elif spec.kind == "hub":
        try:
            hf = load_hub_hf(spec.text, dtype)
        except OSError as err:
            raise _hub_unreachable(spec.text, err) from err
    else:
        hf = load_hf(spec, dtype)
    if split is not None:
        device = _dispatch(hf.model, split, max_memory)
    return bridge_from_hf(hf, device, spec.slug, prepend_bos)


def _dispatch(model, split, max_memory: str | None):
    """``model`` (on the CPU) placed by accelerate as ``split`` maps it; the device the bridge boots with: the one
    device of a map that names one, else None (the bridge reads the dispatched model's ``hf_device_map``)."""
    from ..validation.errors import reason
    from .placement.memory_units import parse_bytes

    placed = split.accelerate_map(model, parse_bytes(max_memory) if max_memory is not None else None)
    targets = {f"cuda:{v}" if isinstance(v, int) else str(v) for v in placed.values()}
    if len(targets) == 1:
        target = torch.device(targets.pop())
        model.to(target)
        return target
    from accelerate import dispatch_model

    try:
        dispatch_model(model, device_map=placed)
    except (ValueError, KeyError, RuntimeError) as err:  # a file naming modules the model lacks
        raise UsageError(f"--device-map {split.text!r} does not fit the model ({reason(err, 160)}): map each of its "
                         "modules (model.embed_tokens, model.layers.N, lm_head, ...) to a device") from None
    return None


def _enable_fast_paths(model, engine: str) -> None:
    if engine == HOOKED_TRANSFORMER:
        from .fused_attention import enable_fused_attention
        from .weight_layout import use_linear_layout

        use_linear_layout(model)
        enable_fused_attention(model)
    else:
        from .bridge_attention import enable_bridge_fast_path
        from .bridge_forward import enable_bridge_early_stop
        from .bridge_linear import enable_bridge_linear_fast_path
        from .bridge_norm import enable_bridge_norm_fast_path

        enable_bridge_fast_path(model)
        enable_bridge_norm_fast_path(model)
        enable_bridge_linear_fast_path(model)
        enable_bridge_early_stop(model)


def check_hub_model(name: str) -> None:
    """A hub name must be one TransformerLens knows, and the hub reachable (or its cache allowed):
    checked before anything else runs, without downloading anything."""
    if not known_hub_name(name):
        raise UsageError(unknown_model_message(name))
    if not offline_mode() and not hub_reachable():
        raise UsageError(
            f"cannot load {name!r}: the Hugging Face hub is unreachable; pass a local HF directory or a .gguf file "
            "to --model (or, with the model in your HF cache, set HF_HUB_OFFLINE=1)"
        )


def _from_hub(name, device, dtype, processing, prepend_bos, n_devices: int = 1) -> HookedModel:
    from transformer_lens import HookedTransformer

    try:
        return HookedTransformer.from_pretrained(
            name, device=str(device), dtype=dtype, default_prepend_bos=prepend_bos, n_devices=n_devices,
            **asdict(processing)
        )
    except OSError as err:
        raise _hub_unreachable(name, err) from err


def _hub_unreachable(name: str, err: OSError) -> UsageError:
    return UsageError(f"cannot load {name!r} from the Hugging Face hub ({type(err).__name__}): without network, "
                      "download it elsewhere and pass its local directory or a .gguf file to --model")


def __getattr__(name: str):
    if name == "HookedTransformer":  # kept as a module attribute for callers that patch it
        from transformer_lens import HookedTransformer

        return HookedTransformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
