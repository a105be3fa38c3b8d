"""Names of the massive-activation resets and of the set_mean modes (no torch: CLI checks use them)."""

RESETS = ("set_zero", "set_mean")
MEAN_MODES = ("detected", "fixed_sites")
