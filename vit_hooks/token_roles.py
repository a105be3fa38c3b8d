"""What each token position of a ViT is: the CLS token, register r, or the patch at (row, col).

timm orders the sequence as [CLS, registers..., patches row by row] (``num_prefix_tokens`` = 1 +
``num_reg_tokens``). The recorder of ``mech_interp.core`` takes an integer label per position: the
ViT side passes the position itself, and ``name`` turns it into the role (``cls``, ``reg2``,
``patch(3,7)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Int

from mech_interp.core.token_layout import TokenLayout


@dataclass(frozen=True)
class TokenRoles:
    layout: TokenLayout  # CLS and the registers are the prefix positions, each with its role (cls, reg0, ...)
    grid: tuple[int, int]  # patch rows, cols

    @classmethod
    def of(cls, model: torch.nn.Module, img_size: int) -> "TokenRoles":
        if not getattr(model, "has_class_token", True) or model.num_prefix_tokens != 1 + model.num_reg_tokens:
            raise ValueError("token roles need timm's layout: one class token, then the registers, then the patches")
        grid = model.patch_embed.dynamic_feat_size((img_size, img_size))
        n_registers = int(model.num_reg_tokens)
        layout = TokenLayout(1 + n_registers, 0, ("cls", *(f"reg{r}" for r in range(n_registers))))
        return cls(layout, (int(grid[0]), int(grid[1])))

    @property
    def n_registers(self) -> int:
        return self.layout.n_prefix_tokens - 1

    @property
    def n_prefix(self) -> int:
        return self.layout.n_prefix_tokens

    @property
    def n_tokens(self) -> int:
        return self.n_prefix + self.grid[0] * self.grid[1]

    @property
    def registers(self) -> slice:
        return slice(1, self.n_prefix)

    @property
    def patches(self) -> slice:
        return slice(self.n_prefix, self.n_tokens)

    def kind(self, position: int) -> str:
        return "cls" if position == 0 else "register" if position < self.n_prefix else "patch"

    def name(self, position: int) -> str:
        if position < self.n_prefix:
            return self.layout.roles[position]
        row, col = divmod(position - self.n_prefix, self.grid[1])
        return f"patch({row},{col})"

    def labels(self, batch: int) -> Int[torch.Tensor, "batch pos"]:
        """The recorder's label per position: the position itself (``name`` gives its role)."""
        return torch.arange(self.n_tokens).expand(batch, -1)

    def table(self) -> pd.DataFrame:
        """One row per position: kind, register index, patch row and column (-1 where not applicable)."""
        rows = []
        for p in range(self.n_tokens):
            kind = self.kind(p)
            row, col = divmod(p - self.n_prefix, self.grid[1]) if kind == "patch" else (-1, -1)
            rows.append(
                {
                    "position": p,
                    "role": self.name(p),
                    "kind": kind,
                    "register": p - 1 if kind == "register" else -1,
                    "row": row,
                    "col": col,
                }
            )
        return pd.DataFrame(rows)

    def annotate(self, df: pd.DataFrame, position: str = "position") -> pd.DataFrame:
        """``df`` with the role columns of its ``position`` column added."""
        roles = self.table().rename(columns={"position": position})
        return df.drop(
            columns=[c for c in ("role", "kind", "register", "row", "col") if c in df], errors="ignore"
        ).merge(roles, on=position, how="left")
