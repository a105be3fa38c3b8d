"""Who reads the massive activation: per-head attention to the massive tokens, with spread over
sequences, the sink share, and the head sets the ablation experiments take.

Definitions (printed with every result):

- **massive score** of head (l, h) on one sequence: the mean, over the queries q that have at least
  one massive key k < q, of the attention summed over those keys (``massive_set_score``); a key is
  massive when some dim of its residual at the block's input (``blocks.l.hook_resid_pre``) passes the
  criterion in that sequence. A query's attention to itself never counts. NaN where the block's
  input has no massive position before some query.
- **first score**: mean over queries q > 0 of attention[q, 0] (position 0 of the residual stream:
  a learned prefix position where the model has one, never an attention key slot).
- **slot attention**: mean over queries of the attention summed over a block's extra key slots
  (the layout's ``n_key_slots`` columns in front of the keys); 0 for ordinary attention.
- **sink share** (Gu et al. 2024): share of heads whose first score (mean over sequences) exceeds eps.

Both scores are averaged over sequences; spread = sample std over sequences and a 95% percentile
bootstrap CI of the mean (sequences resampled).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from jaxtyping import Float, Int

from ...core.criterion import MassiveCriterion, massive_mask
from ...core.head_names import head_name
from ...core.token_layout import TokenLayout
from ...metrics.attention_scores import (
    SINK_DEFINITION,
    massive_set_score_per_sequence,
    slot_attention,
    token_keys,
)
from ...metrics.bootstrap import CI_DEFINITION, bootstrap_ci, nan_std
from ...models.hook_names import act_name, engine_hooks, resid_pre
from ...models.hooked_model import HookedModel
from ...models.placement.streamed_context import StreamedContext
from ...validation.errors import UsageError

MASSIVE_SCORE = "massive_score"
FIRST_SCORE = "first_score"
DEFINITIONS = {
    MASSIVE_SCORE: "per sequence: mean over queries q with at least one massive key k < q of the attention summed over "
                   "those keys (massive keys detected at the block's input, blocks.L.hook_resid_pre; a query's "
                   "attention to itself never counts); then averaged over the sequences that have such a query",
    FIRST_SCORE: "mean over queries q > 0 of attention[q, 0] (residual position 0; key slots excluded), averaged over sequences",
    "slot_attention": "mean over queries of the attention summed over the block's extra key slots (0 without slots)",
    "sink_share": SINK_DEFINITION + " (Gu et al. 2024)",
}
NO_MASSIVE_SCORE = ("no head has a massive score (no block's input has a massive token before a query by {criterion}): "
                    "heads ranked by first score instead (attention to residual position 0); --rank-by first asks for "
                    "this ranking, --min-abs / --min-ratio loosen the criterion")


@dataclass
class HeadScores:
    massive: Float[torch.Tensor, "seq layer head"]
    first: Float[torch.Tensor, "seq layer head"]
    slot: Float[torch.Tensor, "layer head"]
    massive_positions: pd.DataFrame  # layer, position, n_sequences: where the massive keys were

    @property
    def n_layers(self) -> int:
        return self.massive.shape[1]

    @property
    def n_heads(self) -> int:
        return self.massive.shape[2]

    def score(self, rank_by: str) -> Float[torch.Tensor, "layer head"]:
        values = self.massive if rank_by == "massive" else self.first
        return values.nanmean(0)

    def table(self, sink_eps: float, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        rows = {"layer": torch.arange(self.n_layers).repeat_interleave(self.n_heads).numpy(),
                "head": torch.arange(self.n_heads).repeat(self.n_layers).numpy()}
        for name, values in ((MASSIVE_SCORE, self.massive), (FIRST_SCORE, self.first)):
            lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            rows[name] = values.nanmean(0).flatten().numpy()
            rows[f"{name}_std"] = nan_std(values).flatten().numpy()
            rows[f"{name}_ci_low"] = lo.flatten().numpy()
            rows[f"{name}_ci_high"] = hi.flatten().numpy()
        rows["n_seqs_with_massive"] = (~self.massive.isnan()).sum(0).flatten().numpy()
        rows["slot_attention"] = self.slot.flatten().numpy()
        table = pd.DataFrame(rows)
        table["sink_head"] = table[FIRST_SCORE] > sink_eps
        return table

    def sink_share(self, sink_eps: float) -> tuple[list[float], float]:
        sinks = (self.first.nanmean(0) > sink_eps).float()
        return sinks.mean(1).tolist(), float(sinks.mean())

    def rank_by_used(self, rank_by: str, criterion: MassiveCriterion) -> tuple[str, str]:
        """The score the heads can be ranked by, and why when it is not ``rank_by``. A model without a massive
        token has no massive score at all; its first score (the sink measure) still ranks every head, so a
        study goes on and says so rather than stopping."""
        if rank_by == "massive" and bool(self.massive.isnan().all()):
            bounds = f"|a| > {criterion.min_abs:g} and |a| >= {criterion.min_ratio:g} x median |a|"
            return "first", NO_MASSIVE_SCORE.format(criterion=bounds)
        return rank_by, ""

    def ranking(self, rank_by: str) -> list[tuple[int, int, float]]:
        """(layer, head, score) from the highest score down; heads without a score are left out."""
        score = self.score(rank_by)
        pairs = [(li, h, float(score[li, h])) for li in range(self.n_layers) for h in range(self.n_heads)
                 if not torch.isnan(score[li, h])]
        return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))

    def head_sets(self, k: int, n_random: int, seed: int, rank_by: str) -> pd.DataFrame:
        """Top-k, bottom-k and ``n_random`` random-k sets (drawn among the scored heads, seeded)."""
        ranked = self.ranking(rank_by)
        if k > len(ranked):
            raise UsageError(f"k {k} is larger than the number of heads with a {rank_by} score ({len(ranked)}): "
                             f"expected 1..{len(ranked)}")
        rng = random.Random(seed)
        sets = [("top", 0, ranked[:k]), ("bottom", 0, ranked[::-1][:k])]
        sets += [("random", draw, sorted(rng.sample(ranked, k), key=lambda t: -t[2])) for draw in range(n_random)]
        return pd.DataFrame([{"set": name, "draw": draw, "rank": i, "layer": li, "head": h, "score": s, "rank_by": rank_by}
                             for name, draw, members in sets for i, (li, h, s) in enumerate(members)])


def heads_of(sets: pd.DataFrame, name: str, draw: int = 0) -> list[tuple[int, int]]:
    rows = sets[(sets["set"] == name) & (sets["draw"] == draw)]
    return [(int(r.layer), int(r.head)) for r in rows.itertuples()]


class HeadScoreRecorder:
    """What ``head_scores`` keeps, filled by two hooks per block that any engine calls with the batch's rows: ``detect``
    at the block's input (``resid_pre``), then ``score`` on its attention pattern. ``state_dict`` lets a streamed pass
    resume."""

    def __init__(self, n_seqs: int, n_layers: int, n_heads: int, criterion: MassiveCriterion, layout: TokenLayout) -> None:
        self.criterion, self.layout, self.n_seqs = criterion, layout, n_seqs
        self.massive = torch.full((n_seqs, n_layers, n_heads), float("nan"))
        self.first = torch.full_like(self.massive, float("nan"))
        self.slot = torch.zeros(n_layers, n_heads)
        self.counts: dict[tuple[int, int], int] = {}  # (block, position) -> sequences with a massive key there
        self._keys: dict[int, torch.Tensor] = {}  # per block: the massive keys of the batch in flight

    def detect(self, layer: int, acts: Float[torch.Tensor, "batch pos d_model"]) -> None:
        self._keys[layer] = massive_mask(acts, self.criterion).any(-1)  # [batch, pos]
        for p in self._keys[layer].nonzero()[:, 1].tolist():
            self.counts[(layer, p)] = self.counts.get((layer, p), 0) + 1

    def score(self, layer: int, rows: slice, pattern: Float[torch.Tensor, "batch head query key"]) -> None:
        slots = self.layout.n_key_slots
        tokens = token_keys(pattern, slots)  # [batch, head, query, pos]
        self.massive[rows, layer] = massive_set_score_per_sequence(tokens, self._keys.pop(layer)).cpu()
        self.first[rows, layer] = tokens[:, :, 1:, 0].float().mean(-1).cpu()
        self.slot[layer] += slot_attention(pattern, slots).cpu() * pattern.shape[0] / self.n_seqs

    def result(self) -> HeadScores:
        positions = pd.DataFrame([{"layer": li, "position": p, "n_sequences": n} for (li, p), n in sorted(self.counts.items())],
                                 columns=["layer", "position", "n_sequences"])
        return HeadScores(self.massive, self.first, self.slot, positions)

    def state_dict(self) -> dict:
        return {"massive": self.massive, "first": self.first, "slot": self.slot,
                "counts": [[li, p, n] for (li, p), n in self.counts.items()]}

    def load_state_dict(self, state: dict) -> None:
        self.massive, self.first, self.slot = state["massive"], state["first"], state["slot"]
        self.counts = {(li, p): n for li, p, n in state["counts"]}


@torch.inference_mode()
def head_scores(model: HookedModel, seqs: Int[torch.Tensor, "seq pos"], criterion: MassiveCriterion,
                batch_size: int = 4, *, layout: TokenLayout) -> HeadScores:
    """Massive and first scores of every head on every sequence, and slot attention (the layout's key
    slots, never counted as position 0)."""
    n_layers = model.cfg.n_layers
    recorder = HeadScoreRecorder(seqs.shape[0], n_layers, model.cfg.n_heads, criterion, layout)
    rows = [slice(0, 0)]

    def detect(acts: Float[torch.Tensor, "batch pos d_model"], hook) -> None:
        recorder.detect(hook.layer(), acts)

    def score(pattern: Float[torch.Tensor, "batch head query key"], hook) -> None:
        recorder.score(hook.layer(), rows[0], pattern)

    hooks = [(resid_pre(i), detect) for i in range(n_layers)] + [(act_name("pattern", i), score) for i in range(n_layers)]
    with engine_hooks(model, hooks):
        for batch in seqs.split(batch_size):
            rows[0] = slice(rows[0].stop, rows[0].stop + batch.shape[0])
            model(batch.to(model.cfg.device), return_type=None)
    return recorder.result()


def streamed_head_scores(context: StreamedContext, seqs: Int[torch.Tensor, "seq pos"], criterion: MassiveCriterion,
                         batch_size: int = 4, *, state_dir: Path | None = None, spill_dir: Path | None = None,
                         after_block: Callable[[int], None] | None = None) -> HeadScores:
    """``head_scores`` one block's weights at a time, on HF's eager attention (the one that computes the pattern);
    resumable from ``state_dir``; ``spill_dir``: where the residual streams wait between blocks, instead of in memory;
    ``after_block(L)`` is called once block L's state is saved."""
    from ...models.placement.streamed_model import StreamedModel
    from ...models.placement.streamed_pass import run_blocks

    dtype = getattr(torch, context.options.dtype)
    streamed = StreamedModel(context.source, context.config, dtype, context.device, attention="eager")
    recorder = HeadScoreRecorder(seqs.shape[0], streamed.n_layers, context.config.num_attention_heads, criterion,
                                 context.layout)
    hooks = lambda i: [(resid_pre(i), lambda acts, hook: recorder.detect(i, acts)),  # noqa: E731
                       (act_name("pattern", i), lambda pattern, hook: recorder.score(i, hook.rows, pattern))]
    run_blocks(streamed, seqs, hooks, last=streamed.n_layers - 1, kept=recorder, batch_size=batch_size,
               state_dir=state_dir, spill_dir=spill_dir, desc="head scores (streamed blocks)", after_block=after_block,
               what={"pass": "head_scores", "criterion": [criterion.min_abs, criterion.min_ratio], "dtype": str(dtype)})
    return recorder.result()


def score_lines(scores: HeadScores, table: pd.DataFrame, sink_eps: float, n_boot: int, seed: int, top: int = 5) -> list[str]:
    per_layer, overall = scores.sink_share(sink_eps)
    lines = [f"  massive score = {DEFINITIONS[MASSIVE_SCORE]}",
             f"  first score = {DEFINITIONS[FIRST_SCORE]}",
             f"  spread: std over sequences; CI = {CI_DEFINITION.format(n_boot=n_boot, seed=seed)}",
             f"  sink share (Gu et al. 2024) = {SINK_DEFINITION.replace('eps', f'eps = {sink_eps}')}: "
             f"{overall:.2f} of {scores.n_layers * scores.n_heads} heads; per block " + " ".join(f"{s:.2f}" for s in per_layer)]
    if float(scores.slot.abs().max()) > 0:
        lines.append(f"  attention to key slots: max over heads {float(scores.slot.max()):.3f} (reported apart, never as token 0)")
    ranked = table.dropna(subset=[MASSIVE_SCORE]).sort_values(MASSIVE_SCORE, ascending=False).head(top)
    lines.append("  highest massive scores: " + (", ".join(
        f"{head_name(r.layer, r.head)} {r.massive_score:.3f} [{r.massive_score_ci_low:.3f}, {r.massive_score_ci_high:.3f}]"
        for r in ranked.itertuples()) or "none (no massive token at any block's input)"))
    return lines
