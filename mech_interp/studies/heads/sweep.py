"""Every head ablated alone: the values of the clean massive entries at one block and the NLL of every
sequence, per head. Two implementations with the same numbers:

- ``naive_sweep``: one full forward per head;
- ``fast_sweep``: one clean forward keeps the residual stream before every block; the ablations of
  block l restart from that residual (``start_at_layer=l``; nothing before block l changes), several
  of them stacked along the batch (row group j loses head j). Blocks after the measured one cannot
  change it, so their heads' values are the clean ones, and only the NLL is computed for them. An
  engine that cannot resume a forward mid-way (TransformerLens 3's beta bridge) runs the stacked
  ablations from the tokens instead.

``fast_sweep`` takes ``pieces`` (the run writer's ``load_piece``/``save_piece``) to keep each finished
block's numbers, so a killed sweep resumes at the block it was computing.

Models whose layout has learned prefix positions take the naive loop: their forward may add the
prefix itself, so restarting from a cached residual is not known to be equivalent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ...core.criterion import MassiveCriterion
from ...core.token_layout import TokenLayout
from ...interventions.heads import HeadMeans, ablate_head, ablate_head_per_row
from ...models.engines import restarts_mid_forward
from ...models.hook_names import resid_pre
from ...models.hooked_model import HookedModel
from .reduced_forward import Probe, probe


@dataclass
class Sweep:
    layer: int  # the block whose resid_post is measured
    heads: list[tuple[int, int]]  # (layer, head), one per row below
    entries: Int[torch.Tensor, "entry 3"]  # clean massive entries at ``layer``: (sequence, position, dim)
    clean: Probe
    values: Float[torch.Tensor, "ablation entry"]
    top1: Float[torch.Tensor, "ablation seq"]
    nll: Float[torch.Tensor, "ablation seq"]


def _means(means: dict[int, HeadMeans] | None, layer: int) -> HeadMeans | None:
    return None if means is None else means[layer]


@torch.inference_mode()
def naive_sweep(model: HookedModel, tokens: Int[torch.Tensor, "seq pos"], layer: int, criterion: MassiveCriterion,
                how: str = "zero", means: dict[int, HeadMeans] | None = None, progress: bool = False) -> Sweep:
    clean = probe(model, tokens, [layer], criterion)
    entries = {layer: clean.entries[layer]}
    heads = [(li, h) for li in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    values, top1, nll = [], [], []
    for li, h in tqdm(heads, desc="single-head sweep (naive)", unit="head", disable=not progress):
        out = probe(model, tokens, [layer], criterion, [ablate_head(li, h, how, _means(means, li)).as_hook()], entries)
        values.append(out.values[layer])
        top1.append(out.top1[0])
        nll.append(out.nll)
    return Sweep(layer, heads, clean.entries[layer], clean, torch.stack(values), torch.stack(top1), torch.stack(nll))


@torch.inference_mode()
def fast_sweep(model: HookedModel, tokens: Int[torch.Tensor, "seq pos"], layer: int, criterion: MassiveCriterion,
               how: str = "zero", means: dict[int, HeadMeans] | None = None, heads_per_forward: int = 0,
               progress: bool = False, pieces=None, piece_key: dict | None = None, *, layout: TokenLayout) -> Sweep:
    if layout.n_prefix_tokens:
        return naive_sweep(model, tokens, layer, criterion, how, means, progress)
    n_layers, n_heads, n_seq = model.cfg.n_layers, model.cfg.n_heads, tokens.shape[0]
    restart = restarts_mid_forward(model)  # else every ablated forward runs from the tokens (same values, slower)
    kept: dict[int, torch.Tensor] = {}

    def keep(acts: Float[torch.Tensor, "batch pos d_model"], hook) -> None:
        kept[hook.layer()] = acts.clone()

    clean = probe(model, tokens, [layer], criterion, [(resid_pre(li), keep) for li in range(n_layers)] if restart else [])
    entries = clean.entries[layer]
    per_forward = heads_per_forward or n_heads
    values = torch.empty(n_layers * n_heads, entries.shape[0])
    top1 = torch.empty(n_layers * n_heads, n_seq)
    nll = torch.empty(n_layers * n_heads, n_seq)
    chunks = [(li, list(range(h0, min(h0 + per_forward, n_heads)))) for li in range(n_layers)
              for h0 in range(0, n_heads, per_forward)]
    device = model.cfg.device
    for li, chunk in tqdm(chunks, desc="single-head sweep", unit="forward", disable=not progress):
        c, first = len(chunk), li * n_heads + chunk[0]
        key = {**(piece_key or {}), "layer": li, "heads": chunk}
        saved = pieces.load_piece(key) if pieces is not None else None
        if saved is not None:
            values[first:first + c], top1[first:first + c], nll[first:first + c] = (torch.tensor(v) for v in saved)
            continue
        rows = torch.tensor(chunk).repeat_interleave(n_seq)  # row group j (n_seq rows) loses head chunk[j]
        ablation = ablate_head_per_row(li, rows, how, _means(means, li))
        measured = [layer] if li <= layer else []
        shifted = entries.repeat(c, 1)
        shifted[:, 0] += torch.arange(c).repeat_interleave(entries.shape[0]) * n_seq
        out = probe(model, tokens.repeat(c, 1), measured, criterion, [ablation.as_hook()], {layer: shifted},
                    start=(li, kept[li].repeat(c, 1, 1).to(device)) if restart else None)
        if measured:
            values[first:first + c] = out.values[layer].reshape(c, entries.shape[0])
            top1[first:first + c] = out.top1[0].reshape(c, n_seq)
        else:  # causal: a head after the measured block leaves it exactly as in the clean run
            values[first:first + c] = clean.values[layer]
            top1[first:first + c] = clean.top1[0]
        nll[first:first + c] = out.nll.reshape(c, n_seq)
        if pieces is not None:
            pieces.save_piece(key, [t[first:first + c].tolist() for t in (values, top1, nll)])
    heads = [(li, h) for li in range(n_layers) for h in range(n_heads)]
    return Sweep(layer, heads, entries, clean, values, top1, nll)
