"""Whether the Hugging Face hub can be used, decided once and quickly.

Offline, ``huggingface_hub`` and ``datasets`` retry each request for ~30 s before failing; one
socket probe lets a run fail (models) or skip (datasets) at once. With ``HF_HUB_OFFLINE=1`` (or
``HF_DATASETS_OFFLINE=1`` for datasets) the libraries read their local cache and no probe is made.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit


def offline_mode(*variables: str) -> bool:
    """True when any of the HF offline variables (default ``HF_HUB_OFFLINE``) is set to 1."""
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in variables or ("HF_HUB_OFFLINE",))


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the hub (``HF_ENDPOINT`` if set). Behind a proxy nothing is probed: the
    libraries reach the hub through it, and a direct connection failing would say nothing."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True
