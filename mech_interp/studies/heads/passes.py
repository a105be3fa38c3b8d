"""The head experiments' passes over a model, whichever its placement: the head scores, the reference means of
``hook_z``, the clean and ablated probes (``reduced_forward.Probe``) and one block's output with and without an
ablation. ``head_passes(context, pieces)`` gives the loaded model's (TransformerLens forwards with hooks) or the
streamed ones (one block's weights at a time: each pass reads the weights once, every ablation a branch of
``streamed_branches``; spilled, the residual streams wait on disk among the run's pieces). Both return the same
values to float tolerance (``tests/test_streamed_runs.py``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float, Int

from ...core.intervention import Intervention
from ...models.context import ModelContext
from ...models.hook_names import engine_hooks, resid_post
from ...models.placement.streamed_context import StreamedContext
from .inputs import head_means, streamed_head_means
from .reduced_forward import Probe, probe
from .scores import HeadScores, head_scores, streamed_head_scores


class WholePasses:
    """On the loaded model."""

    def __init__(self, context: ModelContext) -> None:
        self.context, self.model = context, context.model
        self.name, self.n_layers, self.n_heads = context.name, context.n_layers, context.n_heads
        self.d_head, self.tokenizer = self.model.cfg.d_head, context.tokenizer

    def scores(self, seqs: Int[torch.Tensor, "seq pos"], batch_size: int = 4) -> HeadScores:
        return head_scores(self.model, seqs, self.context.options.criterion, batch_size, layout=self.context.layout)

    def means(self, how: str, reference: Int[torch.Tensor, "_ref pos"], layers) -> dict | None:
        return head_means(self.model, how, reference, layers)

    def probes(self, seqs: Int[torch.Tensor, "seq pos"], ablations: Sequence[Sequence[Intervention]],
               batch_size: int = 4, logits: bool = True) -> tuple[Probe, list[Probe]]:
        """The clean probe of every block, then one per ablation (its interventions in place) at the clean entries."""
        criterion, layers = self.context.options.criterion, list(range(self.n_layers))
        clean = probe(self.model, seqs, layers, criterion, logits=logits)
        return clean, [probe(self.model, seqs, layers, criterion, [a.as_hook() for a in interventions], clean.entries,
                             logits=logits) for interventions in ablations]

    def outputs(self, tokens: Int[torch.Tensor, "one pos"], ablation: Sequence[Intervention], layer: int
                ) -> tuple[Float[torch.Tensor, "pos d_model"], Float[torch.Tensor, "pos d_model"]]:
        """Block ``layer``'s output (float32, CPU) on a one-row input, clean and with ``ablation`` in place."""
        kept = []

        def keep(acts: Float[torch.Tensor, "batch pos d_model"], hook: Any) -> None:
            kept.append(acts[0].float().cpu())

        with torch.inference_mode():
            for hooks in ([], [a.as_hook() for a in ablation]):
                with engine_hooks(self.model, hooks + [(resid_post(layer), keep)]):
                    self.model(tokens.to(self.model.cfg.device), return_type=None, stop_at_layer=layer + 1)
        return kept[0], kept[1]


class StreamedPasses:
    """One block's weights at a time."""

    def __init__(self, context: StreamedContext, pieces: Any) -> None:
        self.context, self.pieces = context, pieces
        self.name, self.n_layers, self.n_heads = context.name, context.n_layers, context.n_heads
        c = context.config
        self.d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.tokenizer = context.tokenizer

    def _model(self):
        from ...models.placement.streamed_model import StreamedModel

        c = self.context
        return StreamedModel(c.source, c.config, getattr(torch, c.options.dtype), c.device)

    def _state_dir(self, name: str):
        from ...models.placement.streamed_pass import pass_state_dir

        return pass_state_dir(self.pieces, {"streamed_pass": name})

    def scores(self, seqs: Int[torch.Tensor, "seq pos"], batch_size: int = 4) -> HeadScores:
        with self._state_dir("head_scores") as state_dir:
            return streamed_head_scores(self.context, seqs, self.context.options.criterion, batch_size,
                                        state_dir=state_dir, spill_dir=self.context.spill_dir(state_dir))

    def means(self, how: str, reference: Int[torch.Tensor, "_ref pos"], layers) -> dict | None:
        with self._state_dir("head_means") as state_dir:
            return streamed_head_means(self.context, how, reference, layers, self.context.spill_dir(state_dir))

    def probes(self, seqs: Int[torch.Tensor, "seq pos"], ablations: Sequence[Sequence[Intervention]],
               batch_size: int = 4, logits: bool = True) -> tuple[Probe, list[Probe]]:
        from .streamed_probes import streamed_probes

        with self._state_dir("probes") as state_dir:
            return streamed_probes(self._model(), seqs, ablations, self.context.options.criterion, batch_size,
                                   spill_dir=self.context.spill_dir(state_dir), logits=logits)

    def outputs(self, tokens: Int[torch.Tensor, "one pos"], ablation: Sequence[Intervention], layer: int
                ) -> tuple[Float[torch.Tensor, "pos d_model"], Float[torch.Tensor, "pos d_model"]]:
        from ...models.placement.streamed_branches import streamed_branches

        kept: dict[str, torch.Tensor] = {}

        def keep(name: str, block: int, rows: slice, acts: torch.Tensor) -> None:
            if block == layer:
                kept[name] = acts[0].float().cpu()

        branches = {"clean": {}, "ablated": {}}
        for intervention in ablation:
            branches["ablated"].setdefault(intervention.layer, []).append(intervention.as_hook())
        with self._state_dir("outputs") as state_dir:
            streamed_branches(self._model(), tokens, branches, last=layer, spill_dir=self.context.spill_dir(state_dir),
                              observe=keep, logits=False, progress=False)
        return kept["clean"], kept["ablated"]


def head_passes(context: ModelContext | StreamedContext, pieces: Any = None) -> WholePasses | StreamedPasses:
    return StreamedPasses(context, pieces) if isinstance(context, StreamedContext) else WholePasses(context)
