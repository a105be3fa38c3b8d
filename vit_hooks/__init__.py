"""timm hooks for DINOv2 with registers (vision side of the study; not built yet)."""
