"""Per-layer statistics computed inside hooks while the model runs; no activation is kept.

For every hooked point and every sequence: the top-k |a| with their (position, token, dim), the
median |a| (exact, over all positions x dims of that sequence), the mean |a|, and the massive
entries by a ``MassiveCriterion``. Sequences are folded into streaming statistics, so memory is
fixed whatever the number of sequences, layers or the model size. Any hook point indexed
[batch, pos, ...] works; per-head ones ([batch, pos, head, d_head], e.g. ``attn.hook_z``) report
``dim = head * d_head + i``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from .detection import MassiveCriterion
from .dtype_range import check_range
from .errors import UsageError
from .order_statistics import at_least, order_statistics
from .running_stats import Mean, TopK

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def block_of(hook_name: str) -> int | None:
    match = _BLOCK.match(hook_name)
    return int(match.group(1)) if match else None


def check_layer(model: HookedTransformer, layer: int) -> int:
    n = model.cfg.n_layers
    if not -n <= layer < n:
        raise UsageError(f"layer {layer} out of range: {model.cfg.model_name} has blocks 0..{n - 1} (0-based)")
    return layer % n


_NOT_PER_POSITION = ("hook_attn_scores", "hook_pattern")  # [batch, head, query_pos, key_pos]


def check_hook_names(model: HookedTransformer, hook_names: Sequence[str]) -> None:
    for name in hook_names:
        if name not in model.hook_dict:
            raise UsageError(f"unknown hook point {name!r}: expected a name from model.hook_dict, e.g. {resid_post(0)}")
        if name.endswith(_NOT_PER_POSITION):
            raise UsageError(f"hook point {name!r} is not indexed by [batch, pos, ...]: expected a residual, MLP or "
                             "per-head output such as blocks.0.hook_resid_post, blocks.0.hook_mlp_out, blocks.0.attn.hook_z")


@dataclass
class LayerStats:
    summary: pd.DataFrame  # one row per hook point
    top_entries: pd.DataFrame  # the largest |a| over all sequences, per hook point
    massive: pd.DataFrame  # massive entries grouped by (hook, position, dim, token)
    criterion: MassiveCriterion
    n_sequences: int

    def first_massive_layer(self, min_fraction: float = 0.5) -> int | None:
        """First block whose massive entries show up in at least ``min_fraction`` of sequences
        (a lone outlier in one sequence should not move the intervention layer)."""
        rows = self.summary[self.summary["seq_fraction_with_massive"] >= min_fraction].dropna(subset=["layer"])
        return None if rows.empty else int(rows["layer"].min())

    def massive_dims(self, layer: int | None = None) -> list[int]:
        rows = self.massive if layer is None else self.massive[self.massive["layer"] == layer]
        return sorted(int(d) for d in rows["dim"].unique())


class LayerStatsRecorder:
    """Hook functions that fold each forward's activations into streaming statistics.

    Call ``begin_batch(tokens)`` before each forward so that entries can name their tokens.
    """

    def __init__(self, hook_names: Sequence[str], k: int = 3, criterion: MassiveCriterion = MassiveCriterion(), n_top_entries: int = 20):
        self.hook_names = list(hook_names)
        self.k = k
        self.criterion = criterion
        self.per_sequence = {name: Mean() for name in self.hook_names}  # [top1..k, median, mean_abs, max_abs]
        self.with_massive = {name: 0 for name in self.hook_names}
        self.top = {name: TopK(n_top_entries, n_meta=4) for name in self.hook_names}  # meta: seq, pos, dim, token
        # (hook, pos, dim, token) -> [count, sum of values, sum of |values|]
        self.massive: dict[tuple[str, int, int, int], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        self._tokens: torch.Tensor | None = None
        self._seq_offset = 0
        self.n_sequences = 0

    def begin_batch(self, tokens: Int[torch.Tensor, "batch pos"]) -> None:
        if self._tokens is not None:
            self._seq_offset += self._tokens.shape[0]
        self._tokens = tokens.detach().cpu()
        self.n_sequences = self._seq_offset + tokens.shape[0]

    def fwd_hooks(self) -> list[tuple[str, Callable]]:
        return [(name, self._hook) for name in self.hook_names]

    def _hook(self, acts: Float[torch.Tensor, "batch pos d_model"], hook: HookPoint) -> None:
        if self._tokens is None:
            raise RuntimeError("LayerStatsRecorder.begin_batch(tokens) must be called before each forward")
        name = hook.name
        check_range(acts, name)
        acts = acts.flatten(2)  # per-head hooks [batch, pos, head, d_head]: dim = head * d_head + i
        batch, n_pos, d_model = acts.shape
        flat = acts.detach().flatten(1)  # [batch, pos*d_model]
        mag = flat.abs().float()
        top_values, median = (t.to(mag.device) for t in order_statistics(mag, self.k))
        row = torch.cat([top_values, median[:, None], mag.mean(1, keepdim=True), top_values[:, :1]], dim=1)
        self.per_sequence[name].add(row)

        # One pass over the hidden state finds both the top-k and the massive entries: everything at
        # or above the lower of the two thresholds (a handful per sequence), sorted out afterwards.
        bound = self.criterion.lower_bound(median)
        seq_idx, flat_idx = at_least(mag, torch.minimum(bound, top_values[:, -1]))
        on_device = (seq_idx.to(mag.device), flat_idx.to(mag.device))
        scores, values = mag[on_device].cpu(), flat[on_device].float().cpu()
        self._add_top(name, seq_idx, flat_idx, scores, values, d_model)

        massive = self.criterion.is_massive(scores, median.cpu()[seq_idx])
        seq_idx, flat_idx, values = seq_idx[massive], flat_idx[massive], values[massive]
        self.with_massive[name] += int(seq_idx.unique().numel())
        if seq_idx.numel():
            pos, dim = flat_idx // d_model, flat_idx % d_model
            tok = self._tokens[seq_idx, pos]
            for p, d, t, v in zip(pos.tolist(), dim.tolist(), tok.tolist(), values.tolist()):
                entry = self.massive[(name, p, d, t)]
                entry[0] += 1
                entry[1] += v
                entry[2] += abs(v)

    def _add_top(self, name, seq, flat_idx, scores, values, d_model) -> None:
        """Keep the ``k`` largest candidates of each sequence (there can be more on ties)."""
        order = scores.argsort(descending=True)
        order = order[seq[order].argsort(stable=True)]  # grouped by sequence, largest first in each
        grouped = seq[order]
        rank = torch.arange(len(order)) - torch.searchsorted(grouped, grouped)
        keep = order[rank < self.k]
        seq, flat_idx = seq[keep], flat_idx[keep]
        pos, dim = flat_idx // d_model, flat_idx % d_model
        meta = torch.stack([seq + self._seq_offset, pos, dim, self._tokens[seq, pos]], dim=1)
        self.top[name].add(scores[keep], values[keep], meta)

    def result(self, tokenizer=None) -> LayerStats:
        def token_str(t: int) -> str:
            return tokenizer.decode([t]) if tokenizer is not None else str(t)

        summary, top_rows = [], []
        for name in self.hook_names:
            stats = self.per_sequence[name]
            if stats.count == 0:
                raise RuntimeError(f"no activations reached {name}: was the forward stopped before it?")
            mean, std = stats.mean().tolist(), stats.std().tolist()
            row = {"hook": name, "layer": block_of(name)}
            for r in range(self.k):
                row[f"top{r + 1}"] = mean[r]
            row["median"] = mean[self.k]
            row["mean_abs"] = mean[self.k + 1]
            row["ratio_top1_median"] = mean[0] / mean[self.k] if mean[self.k] > 0 else float("inf")
            row["top1_std"] = std[0]
            row["median_std"] = std[self.k]
            row["n_sequences"] = stats.count
            row["seq_fraction_with_massive"] = self.with_massive[name] / stats.count
            summary.append(row)
            top = self.top[name]
            for rank, (score, value, (s, p, d, t)) in enumerate(zip(top.scores.tolist(), top.values.tolist(), top.meta.tolist())):
                top_rows.append({"hook": name, "layer": block_of(name), "rank": rank + 1, "abs": score, "value": value,
                                 "sequence": s, "position": p, "dim": d, "token_id": t, "token": token_str(t)})
        massive_rows = [
            {"hook": h, "layer": block_of(h), "position": p, "dim": d, "token_id": t, "token": token_str(t),
             "count": int(c), "mean_value": s / c, "mean_abs": a / c}
            for (h, p, d, t), (c, s, a) in sorted(self.massive.items(), key=lambda kv: (self.hook_names.index(kv[0][0]), kv[0][1], kv[0][2]))
        ]
        massive_cols = ["hook", "layer", "position", "dim", "token_id", "token", "count", "mean_value", "mean_abs"]
        return LayerStats(
            summary=pd.DataFrame(summary).astype({"layer": "Int64"}),
            top_entries=pd.DataFrame(top_rows),
            massive=pd.DataFrame(massive_rows, columns=massive_cols).astype({"layer": "Int64"}),
            criterion=self.criterion,
            n_sequences=self.n_sequences,
        )


def stop_layer(model: HookedTransformer, hook_names: Sequence[str]) -> int | None:
    """Blocks after the last hooked one need not run; ``None`` when a non-block hook needs the end."""
    blocks = [block_of(n) for n in hook_names]
    if any(b is None for b in blocks):
        return None
    last = max(blocks) + 1
    return None if last >= model.cfg.n_layers else last


def collect_layer_stats(
    model: HookedTransformer,
    batches: Iterable[Int[torch.Tensor, "batch pos"]],
    hook_names: Sequence[str] | None = None,
    k: int = 3,
    criterion: MassiveCriterion = MassiveCriterion(),
    progress: bool = True,
    total: int | None = None,
) -> LayerStats:
    """Run ``model`` over token batches and return per-layer statistics (default: every resid_post)."""
    hook_names = list(hook_names) if hook_names else [resid_post(i) for i in range(model.cfg.n_layers)]
    check_hook_names(model, hook_names)
    recorder = LayerStatsRecorder(hook_names, k=k, criterion=criterion)
    stop = stop_layer(model, hook_names)
    device = model.cfg.device
    with torch.inference_mode(), model.hooks(fwd_hooks=recorder.fwd_hooks()):
        for tokens in tqdm(batches, desc="layer statistics", unit="batch", total=total, disable=not progress):
            recorder.begin_batch(tokens)
            model(tokens.to(device), return_type=None, stop_at_layer=stop)
    return recorder.result(model.tokenizer)
