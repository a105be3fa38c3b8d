"""Which model engines this environment has: the default one (.venv, TransformerLens 3.x) has both the
HookedTransformer and 3.x's beta bridge; the second one (.venv-tl4, TransformerLens 4.x) has the bridge only."""

from __future__ import annotations

from mech_interp.models.engines import ENGINES, resolve_engine
from mech_interp.validation.errors import UsageError


def _available() -> tuple[str, ...]:
    found = []
    for name in ENGINES:
        try:
            resolve_engine(name)
        except UsageError:
            continue
        found.append(name)
    return tuple(found)


AVAILABLE = _available()
