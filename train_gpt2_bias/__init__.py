"""GPT-2 variants (default, sink token, attention-bias key/value slot, gated attention) trained from a
TransformerLens config, whose checkpoints load as HookedTransformer models every ``mech_interp`` experiment accepts
(paper Sec. 4.3). ``python -m train_gpt2_bias --help``.

Importing the package does no work beyond ``mech_interp``'s own import, which makes ``torchvision`` importable on
CPU-only torch (transformer_lens imports it through transformers).
"""

import mech_interp  # noqa: F401  (installs the torchvision compatibility finder before transformer_lens loads)
