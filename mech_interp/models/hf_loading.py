"""The Hugging Face model behind a local spec: registered name, local directory or GGUF file."""

from __future__ import annotations

import pickle

from ..storage.user_files import read_json_object
from ..validation.errors import UsageError, reason
from .hf_model import HFModel
from .registry import build_registered
from .spec import ModelSpec


def load_hf(spec: str | ModelSpec, dtype=None) -> HFModel:
    """On the CPU in ``dtype`` (default float32). Casting before the conversion gives the same
    values as casting after it, and halves the host memory a large half-precision model needs."""
    import torch

    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    dtype = dtype or torch.float32
    if spec.kind == "registered":
        return _cast(build_registered(spec.text), dtype)
    if spec.kind == "gguf":
        from .gguf import load_gguf

        return _cast(load_gguf(spec.path), dtype)
    if spec.kind == "hf_dir":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model, info = AutoModelForCausalLM.from_pretrained(spec.path, dtype=dtype, output_loading_info=True,
                                                               trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=False)
        except pickle.UnpicklingError:  # transformers reads *.bin with weights_only=True: code in it is never run
            raise UsageError(f"model directory {spec.text!r} holds pickled weights that need code to load: refused; "
                             "accepted weights are *.safetensors, or *.bin state dicts of tensors only") from None
        except ValueError as err:
            if "auto_map" in read_json_object(spec.path / "config.json", f"model directory {spec.text!r}"):
                # trust_remote_code=False: transformers refuses to import the directory's own modules
                raise UsageError(f"model directory {spec.text!r} needs code of its own to load (config.json's "
                                 "auto_map): refused; only transformers' built-in architectures are loaded") from None
            raise _unloadable(spec, err) from None
        except Exception as err:  # truncated weights, a broken tokenizer file, ...: the directory is at fault
            raise _unloadable(spec, err) from None
        # transformers initialises missing weights at random with a warning: that would be another model
        missing = [str(k) for k in info.get("missing_keys", [])] + [str(k) for k in info.get("mismatched_keys", [])]
        if missing:
            raise UsageError(f"model directory {spec.text!r} lacks weights for {len(missing)} tensors "
                             f"(e.g. {sorted(missing)[0]!r}): fix or re-download it")
        model.eval()
        return HFModel(model=model, tokenizer=tokenizer, source=f"local:{spec.path}")
    raise UsageError(f"{spec.text!r} is a hub name, not a local model: load it with load_model")


def _unloadable(spec: ModelSpec, err: Exception) -> UsageError:
    return UsageError(f"cannot load the model directory {spec.text!r} ({reason(err, 160)}): fix or re-download it")


def _cast(hf: HFModel, dtype) -> HFModel:
    if hf.model.dtype != dtype:
        hf.model.to(dtype)
    return hf
