"""``reduced_forward.probe`` for the clean model and every ablation at once, one block's weights at a time: each
ablation is a branch of ``streamed_branches`` that forks from the clean streams at its first ablated block, and every
branch is read at every block's output as ``probe`` reads it (top-1 |a|, the clean run's massive entries and their
values, the next-token NLL of each sequence)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float, Int

from ...core.criterion import MassiveCriterion, massive_mask
from ...core.intervention import Intervention
from ...models.placement.streamed_branches import streamed_branches
from ...models.placement.streamed_model import StreamedModel
from .reduced_forward import Probe

CLEAN = "clean"


class _Reads:
    """What ``probe`` keeps of one branch, filled batch by batch; the clean branch detects, the others read its
    entries."""

    def __init__(self, n_layers: int, n_seqs: int, clean: "_Reads | None", criterion: MassiveCriterion) -> None:
        self.top1 = torch.zeros(n_layers, n_seqs)
        self.entries: dict[int, list[torch.Tensor]] = {}
        self.values: dict[int, list[torch.Tensor]] = {}
        self.clean, self.criterion = clean, criterion

    def read(self, layer: int, rows: slice, acts: Float[torch.Tensor, "batch pos d_model"]) -> None:
        self.top1[layer, rows] = acts.abs().flatten(1).amax(1).float().cpu()
        if self.clean is None:
            at = massive_mask(acts, self.criterion).nonzero().cpu()
            at[:, 0] += rows.start
        else:
            at = self.clean.entries[layer][len(self.entries.get(layer, []))]  # the clean run's, of the same batch
        self.entries.setdefault(layer, []).append(at)
        idx = at.to(acts.device)
        self.values.setdefault(layer, []).append(acts[idx[:, 0] - rows.start, idx[:, 1], idx[:, 2]].float().cpu())

    def probe(self, layers: list[int], nll: Float[torch.Tensor, "seq pos_minus_1"] | None) -> Probe:
        result = Probe(layers, self.top1, {li: torch.cat(self.entries[li]) for li in layers},
                       {li: torch.cat(self.values[li]) for li in layers})
        if nll is not None:
            result.nll = nll.double().sum(1).float()
            result.n_predicted = nll.shape[1]
        return result


def streamed_probes(streamed: StreamedModel, tokens: Int[torch.Tensor, "batch pos"],
                    ablations: Sequence[Sequence[Intervention]], criterion: MassiveCriterion,
                    batch_size: int = 4, spill_dir: Path | None = None, logits: bool = True, progress: bool = True
                    ) -> tuple[Probe, list[Probe]]:
    """The clean probe of every block and one probe per ablation (its interventions' hooks in place), with the NLL
    when ``logits``, in one pass over the weights; ``spill_dir``: where the residual streams wait between blocks,
    instead of in memory."""
    n_layers, n_seqs = streamed.n_layers, tokens.shape[0]
    clean = _Reads(n_layers, n_seqs, None, criterion)
    reads = {CLEAN: clean, **{str(i): _Reads(n_layers, n_seqs, clean, criterion) for i in range(len(ablations))}}
    branches: dict[str, dict[int, list]] = {CLEAN: {}}
    for i, interventions in enumerate(ablations):
        branches[str(i)] = {}
        for intervention in interventions:
            branches[str(i)].setdefault(intervention.layer, []).append(intervention.as_hook())
    nll = streamed_branches(streamed, tokens, branches, batch_size=batch_size, spill_dir=spill_dir, progress=progress,
                            logits=logits, desc="head ablation",
                            observe=lambda name, layer, rows, acts: reads[name].read(layer, rows, acts))
    layers = list(range(n_layers))
    return reads[CLEAN].probe(layers, nll.get(CLEAN)), [reads[str(i)].probe(layers, nll.get(str(i)))
                                                        for i in range(len(ablations))]
