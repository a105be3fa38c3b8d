"""What a streamed run works on instead of a loaded model: the model's files, config and tokenizer, and the
placement chosen for it. The experiments that declare ``placements=(..., "streamed")`` take it in place of a
``ModelContext`` and run ``streamed_pass`` over it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.token_layout import TokenLayout
from .run_placement import Placement
from .weight_source import WeightSource

if TYPE_CHECKING:
    from ..run_options import RunOptions

ENGINE = "streamed"  # HF's own decoder layers, one block's weights at a time (no TransformerLens)


@dataclass
class StreamedContext:
    source: WeightSource
    config: Any  # the transformers config
    tokenizer: Any
    options: RunOptions
    placement: Placement
    name: str  # the model's results name
    layout: TokenLayout = field(default_factory=TokenLayout)

    @classmethod
    def open(cls, run, placement: Placement) -> "StreamedContext":
        source = WeightSource.of(run.model.spec)
        config, tokenizer = source.parts()
        return cls(source, config, tokenizer, run.options, placement, run.model.spec.slug, run.model.metadata.layout)

    def spill_dir(self, state_dir: Path) -> Path | None:
        """Where a pass of this run keeps its residual streams between blocks: on disk under its ``state_dir`` when the
        placement is spilled, else nowhere (in memory)."""
        spilled = self.placement is not None and self.placement.name == "spilled"
        return Path(state_dir) / "residual_streams" if spilled else None

    @property
    def n_ctx(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None)

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    def label(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def info(self) -> dict[str, Any]:
        c, plan = self.config, self.placement.plan
        return {"name": self.name, "source": f"{self.source.kind}:{self.source.path}",
                "n_layers": c.num_hidden_layers, "n_heads": c.num_attention_heads, "d_model": c.hidden_size,
                "d_vocab": c.vocab_size, "architecture": plan.shape.architecture if plan is not None else None,
                "n_params": plan.shape.n_params if plan is not None else None, "dtype": self.options.dtype,
                "device": str(self.device), "n_prefix_tokens": self.layout.n_prefix_tokens,
                "n_key_slots": self.layout.n_key_slots}

    @property
    def device(self):
        from ..loading import resolve_device

        return resolve_device(self.options.device)

    def engine(self) -> dict[str, Any]:
        import transformers

        return {"name": ENGINE, "model_class": "transformers decoder layers, one block at a time",
                "transformers": transformers.__version__}
