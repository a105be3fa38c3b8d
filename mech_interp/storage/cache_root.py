"""Where converted weights are cached: ``$MECH_INTERP_CACHE`` (default ``~/.cache/mech_interp``),
shared by every study that converts a model file (GGUF language models, the ONNX ViT)."""

from __future__ import annotations

import os
from pathlib import Path


def cached_conversion(source: Path, kind: str, suffix: str = "") -> Path | None:
    """Where the conversion of ``source`` is cached: named after its stem, size and mtime, so a file replaced in place
    is converted again; None when caching is off."""
    root = cache_root()
    if root is None:
        return None
    stat = source.stat()
    return root / kind / f"{source.stem}-{stat.st_size}-{stat.st_mtime_ns}{suffix}"


def cache_root() -> Path | None:
    """The cache directory, or None when ``MECH_INTERP_CACHE`` is off, 0 or none."""
    setting = os.environ.get("MECH_INTERP_CACHE", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    return Path(setting).expanduser() if setting else Path.home() / ".cache" / "mech_interp"
