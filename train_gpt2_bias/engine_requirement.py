"""The trainer's one engine: it builds its GPT-2 variants as TransformerLens HookedTransformers (with attention classes
of its own for the key/value slot, the sink prefix and the gate), which TransformerLens 4 removed. On 4.x it is
refused in one line before anything is read; the default variant's checkpoints still load there, on the bridge."""

from __future__ import annotations

from typing import Any

from mech_interp.models import engines
from mech_interp.models.engines import HOOKED_TRANSFORMER, PIN_HINT, engine_record
from mech_interp.validation.errors import UsageError


def require_hooked_transformer() -> None:
    if engines.transformer_lens_major() >= 4:  # both read through the module, so the check and the message agree
        raise UsageError(f"train-gpt2-bias builds its variants as HookedTransformers, which TransformerLens 4.0 "
                         f"removed (installed: {engines.transformer_lens_version()}): train where {PIN_HINT[HOOKED_TRANSFORMER]} "
                         f"(scripts/install.sh's .venv); default-variant checkpoints load on the transformer_bridge "
                         f"engine too")


def trainer_engine() -> dict[str, Any]:
    """What a trainer manifest says about the engine."""
    return engine_record(HOOKED_TRANSFORMER)
