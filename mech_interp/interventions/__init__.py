"""Interventions on HookedTransformer hook points, built on the core's intervention protocol.

``set_zero``/``set_mean`` name their site by layer (``blocks.L.hook_resid_post``); ``ablate_head``
acts on ``blocks.L.attn.hook_z[:, :, head]`` before ``W_O``, ``ablate_heads`` on a set of (layer, head) pairs;
``zero_output_slice`` is the earlier GPT-2 study's residual-slice "pruning", kept as a named contrast.
Each is a hook object: ``.as_hook()`` goes into ``model.hooks(fwd_hooks=[...])`` or ``mi.perplexity``.

```python
>>> import mech_interp as mi
>>> model = mi.load_model("random:gpt2-tiny", device="cpu")
>>> seqs = mi.windows(model.tokenizer, mi.load_text("builtin").text, seq_len=32, n_windows=4)
>>> clean = mi.perplexity(model, seqs, progress=False).value
>>> ablated = mi.perplexity(model, seqs, [a.as_hook() for a in mi.interventions.ablate_heads([(1, 0), (2, 3)])],
...                         progress=False).value
>>> ablated != clean
True

```
"""

from ..core.massive_reset import FixedSiteMeans, MassiveMeans, SetMean, SetZero
from ..core.reset_kinds import MEAN_MODES, RESETS
from .heads import HeadMeans, ablate_head, ablate_heads, zero_output_slice
from .massive import make_reset, set_mean, set_zero

__all__ = ["MEAN_MODES", "RESETS", "FixedSiteMeans", "HeadMeans", "MassiveMeans", "SetMean", "SetZero",
           "ablate_head", "ablate_heads", "make_reset", "set_mean", "set_zero", "zero_output_slice"]
