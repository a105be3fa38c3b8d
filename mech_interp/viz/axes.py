"""Axis titles shared by every figure, so each says which layer convention it uses."""

LAYER_AXIS = "block (0-based, output = blocks.L.hook_resid_post)"
