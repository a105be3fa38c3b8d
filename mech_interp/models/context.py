"""What a language-model experiment works on: the loaded model (either engine's), the run's options and the
model's token layout (read from what describes the model, never from the model object)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.token_layout import TokenLayout

if TYPE_CHECKING:
    from .hooked_model import HookedModel
    from .run_options import RunOptions


@dataclass
class ModelContext:
    model: HookedModel
    options: RunOptions
    layout: TokenLayout = field(default_factory=TokenLayout)
    placement: Any = None  # the placement.run_placement.Placement a run chose; None for a model passed in

    # What an experiment reads of its model, spelled as a StreamedContext spells it, so that code written for both
    # placements reads them the same way.
    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def name(self) -> str:
        return self.model.cfg.model_name

    @property
    def n_ctx(self) -> int:
        return self.model.cfg.n_ctx

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    @property
    def n_heads(self) -> int:
        return self.model.cfg.n_heads

    def info(self) -> dict[str, Any]:
        """The model's description in a run's manifest."""
        cfg = self.model.cfg
        return {"name": cfg.model_name, "source": getattr(cfg, "source", cfg.model_name), "n_layers": cfg.n_layers,
                "n_heads": cfg.n_heads, "d_model": cfg.d_model, "d_vocab": cfg.d_vocab,
                "architecture": cfg.original_architecture,
                "n_params": sum(p.numel() for p in self.model.parameters()),
                "dtype": str(cfg.dtype), "device": str(cfg.device),
                "n_prefix_tokens": self.layout.n_prefix_tokens, "n_key_slots": self.layout.n_key_slots}

    def engine(self) -> dict[str, Any]:
        """Which engine ran (hooked_transformer | transformer_bridge) and the TransformerLens version."""
        from .engines import engine_of, engine_record

        return engine_record(engine_of(self.model))
