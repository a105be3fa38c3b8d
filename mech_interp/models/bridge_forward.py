"""A TransformerBridge forward that stops after the last block when nothing reads further.

``model(tokens, return_type=None)`` asks for no output and ``stop_at_layer=n_layers`` for the residual after the
last block: a HookedTransformer then returns after its blocks, but the bridge runs the whole HF model, final norm and
LM head included (on SmolLM2-135M the head, 49,152 x 576 per token, is a sixth of the forward), and its own
``stop_at_layer`` stops only before a block that exists. A model switched to the subclass here ends such a call at
the final norm's input instead, through the exception the bridge's own ``stop_at_layer`` raises and its forward
catches, unless a hook sits on the final norm or the unembedding. Part of the bridge's fast paths
(``load_model(..., fast_paths=True)``); tests/test_engines.py checks that the residual and every hook are as before.
"""

from __future__ import annotations

from .hooked_model import has_hooks

_AFTER_THE_BLOCKS = ("ln_final", "unembed")



def _nothing_reads_the_head(model) -> bool:
    for name in _AFTER_THE_BLOCKS:
        part = getattr(model, name, None)
        if part is None or any(has_hooks(m) for m in part.modules()):
            return False
    return True


def _stop_at_final_norm(module, args):
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    raise StopAtLayerException(args[0])  # [batch, pos, d_model]: the residual after the last block


def _forward(self, input, *args, **kwargs):
    plain = _PLAIN[type(self)]
    stop = kwargs.get("stop_at_layer")
    ends_at_blocks = stop is not None and stop == len(self.blocks)
    if args or not (ends_at_blocks or ("return_type" in kwargs and kwargs["return_type"] is None and stop is None)) \
            or not _nothing_reads_the_head(self):
        return plain.forward(self, input, *args, **kwargs)
    kwargs["stop_at_layer"] = None  # no block has that index: the bridge's own check would never fire
    handle = self.ln_final.register_forward_pre_hook(_stop_at_final_norm)
    try:
        residual = plain.forward(self, input, **kwargs)
    finally:
        handle.remove()
    return residual if ends_at_blocks else None


_FAST: dict[type, type] = {}
_PLAIN: dict[type, type] = {}


def enable_bridge_early_stop(model):
    """Switch the bridge to the subclass (idempotent)."""
    cls = type(model)
    if cls in _PLAIN:
        return model
    if cls not in _FAST:
        fast = type(f"EarlyStopping{cls.__name__}", (cls,), {"forward": _forward, "__module__": __name__})
        _FAST[cls], _PLAIN[fast] = fast, cls
    model.__class__ = _FAST[cls]
    return model
