"""Massive activations and registers in vision transformers, through hooks on timm's own modules.

The vision half of the study (upstream ``main_vit.py``): named hook sites in the TransformerLens
style on timm ``VisionTransformer`` blocks, token roles (CLS, registers, patches by row and
column), the register means and Fix-Reg-Mean, and the experiments as library functions. It reuses
``mech_interp.core`` (criterion, order statistics, recorder, interventions) and ``mech_interp.runs``
/ ``mech_interp.viz`` writers, never the language-model modules.

Importing it costs nothing: ``import mech_interp`` first puts the torchvision shim in place, and
torch and timm are imported only by the modules that use them.
"""

import mech_interp  # noqa: F401  (makes torchvision, and so timm's data transforms, importable on CPU torch)
