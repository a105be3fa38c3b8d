"""DINOv2's ImageNet linear head on ``concat[CLS, mean of patch tokens]`` (both after the final
LayerNorm; registers are not in the patch mean), from a local checkpoint.

Accepted checkpoints: DINOv2's ``dinov2_vit*14*_linear_head.pth`` (``{"weight": [1000, 2 * d_model],
"bias": [1000]}``), optionally nested under ``state_dict`` / ``model`` or prefixed (``linear.``,
``head.``). The 4-block variants (``linear4``, ``5 * d_model`` inputs) are refused: they need the
CLS tokens of the last four blocks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from jaxtyping import Float

from mech_interp.storage.tensor_files import load_tensors, require_real_finite
from mech_interp.storage.user_files import require_file
from mech_interp.validation.errors import UsageError

from .token_roles import TokenRoles

EXPECTED = "DINOv2's linear head checkpoint (weight [classes, 2 x d_model], bias)"


def head_features(
    final: Float[torch.Tensor, "batch token d_model"], roles: TokenRoles
) -> Float[torch.Tensor, "batch two_d_model"]:
    return torch.cat([final[:, 0], final[:, roles.patches].mean(1)], dim=1)


def load_linear_head(path: str | Path, d_model: int) -> torch.nn.Linear:
    path = require_file(Path(path).expanduser(), "--head", EXPECTED)
    raw = load_tensors(path, "--head", EXPECTED)
    for key in ("state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    weights = (
        {k.rsplit(".", 1)[-1]: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if isinstance(raw, dict)
        else {}
    )
    w, b = weights.get("weight"), weights.get("bias")
    if w is None or b is None or {w.layout, b.layout} != {torch.strided} or w.ndim != 2 or b.shape != (w.shape[0],):
        raise UsageError(f"--head {str(path)!r} holds no linear layer (weight [classes, inputs], bias [classes])")
    for name, tensor in (("weight", w), ("bias", b)):
        require_real_finite(tensor, f"--head {str(path)!r}: its {name}")
    if w.shape[1] != 2 * d_model:
        raise UsageError(
            f"--head {str(path)!r} takes {w.shape[1]} inputs; the model needs 2 x {d_model} = {2 * d_model} "
            "(concat[CLS, mean patch]); 4-block heads (linear4) are not supported"
        )
    head = torch.nn.Linear(w.shape[1], w.shape[0])
    head.load_state_dict({"weight": w.float(), "bias": b.float()})
    return head.eval()
