"""When statistics leave the device: the module flag of the recorder's deferred path.

On the CPU the recorder works on the host as the activations arrive (exact radix selection in
numpy, no copies). On a GPU every host read (``.cpu()``, ``.item()``, ``nonzero``) waits for the
device to finish, so a pass that reads per layer serialises the forward at every hooked layer;
the deferred path keeps each layer's reductions on the device and moves them to the host once per
batch. ``"auto"`` defers exactly when the activations are not on the CPU; ``"always"`` runs the
deferred path on the CPU too (tests use it to compare both paths on one machine).
"""

from __future__ import annotations

import torch

MODES = ("auto", "always", "never")
_mode = "auto"


def set_deferred_transfer(mode: str) -> None:
    global _mode
    if mode not in MODES:
        raise ValueError(f"unknown deferred-transfer mode {mode!r}: expected one of {', '.join(MODES)}")
    _mode = mode


def deferred_transfer_mode() -> str:
    return _mode


def use_deferred(device: torch.device) -> bool:
    return _mode == "always" or (_mode == "auto" and device.type != "cpu")
