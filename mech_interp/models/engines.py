"""The two model engines and which one runs: TransformerLens 3's ``HookedTransformer`` and the
``TransformerBridge`` of TransformerLens 4 (also present, as a beta, in 3.x).

``auto`` follows the installed TransformerLens: 3.x builds HookedTransformers (what SAELens, which
pins ``transformer-lens<4``, works with), 4.x has nothing else and builds TransformerBridges. Where
both could serve (3.x has both classes) ``--engine`` forces one. Every manifest records the engine
that ran and the TransformerLens version (``engine_record``).

The studies name every site by its TransformerLens name on both engines; ``hook_names.engine_hooks``
hooks it by the bridge's own name where ``hook_names.BRIDGE_NATIVE`` has one (the bridge also
registers TransformerLens' names as aliases of its hook points). Both engines give the unmodified HF model's values: the HookedTransformer is converted without weight
processing, the bridge runs the HF model itself with compatibility mode (LayerNorm folding, weight
centring) never enabled.
Importing this module imports no torch and no TransformerLens.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from ..validation.errors import UsageError

HOOKED_TRANSFORMER = "hooked_transformer"
TRANSFORMER_BRIDGE = "transformer_bridge"
AUTO = "auto"


@dataclass(frozen=True)
class Engine:
    name: str
    model_class: str  # what it builds, for messages
    removed_in: int | None  # the TransformerLens major version that no longer has it


ENGINES: dict[str, Engine] = {
    # TransformerLens 3.x: the HF weights converted into TransformerLens' own modules
    HOOKED_TRANSFORMER: Engine(HOOKED_TRANSFORMER, "HookedTransformer", 4),
    # TransformerLens 4.x (beta in 3.x): hook points registered on the HF model itself
    TRANSFORMER_BRIDGE: Engine(TRANSFORMER_BRIDGE, "TransformerBridge", None),
}
ENGINE_CHOICES = (AUTO, *ENGINES)
PIN_HINT = {HOOKED_TRANSFORMER: "pip install 'transformer-lens>=3.9,<4'", TRANSFORMER_BRIDGE: "pip install 'transformer-lens>=4.3,<5'"}


def transformer_lens_version() -> str | None:
    """The installed TransformerLens version, read from its metadata (nothing is imported)."""
    try:
        return importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:
        return None


def transformer_lens_major() -> int:
    """The installed TransformerLens major version; 0 when it is not installed."""
    head = (transformer_lens_version() or "0").split(".")[0]
    return int(head) if head.isdigit() else 0


def check_engine_name(name: str) -> str:
    if name not in ENGINE_CHOICES:
        raise UsageError(f"unknown engine {name!r}: expected one of {', '.join(ENGINE_CHOICES)}")
    return name


def resolve_engine(requested: str = AUTO) -> str:
    """The engine that runs for ``requested`` (``auto`` or an engine name) with the installed TransformerLens;
    a forced engine this installation lacks is refused in one line that names the one it has."""
    check_engine_name(requested)
    version = transformer_lens_version()
    if version is None:
        raise UsageError("transformer-lens is not installed: " + PIN_HINT[HOOKED_TRANSFORMER]
                         + " (HookedTransformer) or " + PIN_HINT[TRANSFORMER_BRIDGE] + " (TransformerBridge)")
    major = transformer_lens_major()
    default = HOOKED_TRANSFORMER if major < 4 else TRANSFORMER_BRIDGE
    if requested == AUTO:
        return default
    engine = ENGINES[requested]
    if engine.removed_in is not None and major >= engine.removed_in:
        raise UsageError(f"engine {requested!r} needs transformer-lens<{engine.removed_in} ({engine.model_class} was "
                         f"removed in {engine.removed_in}.0), but {version} is installed: use --engine {default} "
                         f"(or auto), or {PIN_HINT[requested]} in another environment")
    return requested


def engine_record(name: str) -> dict[str, str | None]:
    """What a manifest says about the engine that ran."""
    return {"name": name, "model_class": ENGINES[name].model_class, "transformer_lens": transformer_lens_version()}


def engine_of(model) -> str:
    """The engine that built a loaded model."""
    return TRANSFORMER_BRIDGE if hasattr(model, "adapter") and hasattr(model, "original_model") else HOOKED_TRANSFORMER


def restarts_mid_forward(model) -> bool:
    """Whether ``model(residual, start_at_layer=l)`` resumes a forward at block l: a HookedTransformer does, and so
    does TransformerLens 4's bridge; 3.x's beta bridge raises NotImplementedError."""
    return engine_of(model) == HOOKED_TRANSFORMER or transformer_lens_major() >= 4
