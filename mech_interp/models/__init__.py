"""Models: specs, the registry, HF/GGUF loading and conversion to HookedTransformer, fast paths.

Importing the package fills the registry (builtin models) and imports no torch.
"""

from . import builtin  # noqa: F401  (registers the builtin models)
