"""GGUF files to a dequantized float32 Hugging Face model, cached as a plain HF directory.

Dequantizing takes ~16 s for a 135M model; the converted model is saved once under
``$MECH_INTERP_CACHE`` (default ``~/.cache/mech_interp``), keyed by the file's name, size and
mtime, and later loads read that directory. ``MECH_INTERP_CACHE=off`` disables the cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from .model_registry import HFModel


def cache_root() -> Path | None:
    setting = os.environ.get("MECH_INTERP_CACHE", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    return Path(setting).expanduser() if setting else Path.home() / ".cache" / "mech_interp"


def _cache_dir(path: Path) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    stat = path.stat()
    return root / "gguf" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def load_gguf(path: Path) -> HFModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _cache_dir(path)
    if cached is not None and (cached / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
        model.eval()
        return HFModel(model=model, tokenizer=AutoTokenizer.from_pretrained(cached), source=f"gguf:{path} (cached at {cached})")

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The GGUF load leaves a quantization_config that TransformerLens reads as "weights are
    # quantized" and refuses; the tensors are already dequantized, so rebuild a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.eval()
    if cached is not None:
        _save_atomically(model, tokenizer, cached)
    return HFModel(model=model, tokenizer=tokenizer, source=f"gguf:{path}")


def _save_atomically(model, tokenizer, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.replace(scratch, target)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # a concurrent writer won, or the disk is full: load still works
