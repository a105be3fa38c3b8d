"""Experiment 5b: per block and head, the attention paid to CLS, to each register, to the massive
tokens and to the highest-norm patch (Darcet et al.'s artifact candidate).

For a key set S of one image (one token, or the tokens with a massive entry at the block's input,
``blocks.L.hook_resid_pre``), a head's score is the attention summed over the keys in S, averaged over
the queries outside S (a token's attention to itself is not counted), then averaged over the images
where S is not empty (NaN where it is empty for every image). Probabilities come from timm's explicit
attention path (``attn.hook_pattern``). ``uniform`` = 1 / number of tokens, what a head spreading its
attention evenly gives one key.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool, Float
from tqdm.auto import tqdm

from mech_interp.core.criterion import massive_mask
from mech_interp.core.head_names import head_name
from mech_interp.runs.experiment import ExperimentResult

from .. import hook_names
from ..configs import AttentionConfig
from ..figures import head_heatmaps
from ..session import Session

DEFINITION = (
    "score(S) = attention summed over the keys in S, averaged over the queries outside S, then over the "
    "images where S is not empty"
)


def _set_score(
    pattern: Float[torch.Tensor, "batch head query key"], keys: Bool[torch.Tensor, "batch key"]
) -> tuple[Float[torch.Tensor, "batch head"], Bool[torch.Tensor, "batch"]]:
    to_set = torch.einsum("bhqk,bk->bhq", pattern, keys.to(pattern.dtype))
    queries = (~keys).to(pattern.dtype)  # [batch, query]
    n = queries.sum(-1).clamp_min(1)
    return (to_set * queries[:, None, :]).sum(-1) / n[:, None], keys.any(-1)


def run(session: Session, config: AttentionConfig) -> ExperimentResult:
    hooked, roles, options = session.hooked, session.hooked.roles, session.options
    n_tok, n_heads = roles.n_tokens, session.entry.n_heads
    targets = ["cls"] + [f"reg{r}" for r in range(roles.n_registers)] + ["massive", "top_norm_patch"]
    sums = torch.zeros(hooked.n_blocks, len(targets), n_heads, dtype=torch.float64)
    counts = torch.zeros(hooked.n_blocks, len(targets), dtype=torch.float64)
    key_sets: dict[int, list[Bool[torch.Tensor, "batch key"]]] = {}

    def at_input(acts: Float[torch.Tensor, "batch token d_model"], hook) -> None:
        batch, device = acts.shape[0], acts.device
        single = []
        for p in range(roles.n_prefix):
            keys = torch.zeros(batch, n_tok, dtype=torch.bool, device=device)
            keys[:, p] = True
            single.append(keys)
        massive = massive_mask(acts, options.criterion).any(-1)  # [batch, token]
        top = torch.zeros(batch, n_tok, dtype=torch.bool, device=device)
        top[torch.arange(batch, device=device), roles.n_prefix + acts[:, roles.patches].norm(dim=-1).argmax(1)] = True
        key_sets[hook.block] = single + [massive, top]

    def at_pattern(pattern: Float[torch.Tensor, "batch head query key"], hook) -> None:
        for t, keys in enumerate(key_sets.pop(hook.block)):
            score, present = _set_score(pattern, keys)
            sums[hook.block, t] += score[present].double().sum(0).cpu()
            counts[hook.block, t] += present.sum().cpu()

    fwd = [(hook_names.resid_pre(b), at_input) for b in range(hooked.n_blocks)] + [
        (hook_names.pattern(b), at_pattern) for b in range(hooked.n_blocks)
    ]
    with hooked.hooks(fwd):
        for batch, _ in tqdm(
            session.images.batches(options.batch_size, session.vit.preprocessing.eval),
            total=-(-len(session.images) // options.batch_size),
            desc="attention",
            leave=False,
        ):
            hooked(batch)
    scores = sums / counts[..., None]  # NaN where a set never occurred
    rows = []
    for b in range(hooked.n_blocks):
        for h in range(n_heads):
            row = {"layer": b, "head": h}
            row.update({t: float(scores[b, i, h]) for i, t in enumerate(targets)})
            row["n_images_with_massive"] = int(counts[b, targets.index("massive")])
            rows.append(row)
    heads = pd.DataFrame(rows)
    per_block = heads.groupby("layer")[targets].mean()
    uniform = 1 / n_tok
    lines = [
        f"attention of {session.entry.name} over {len(session.images)} images: mean over heads per block "
        f"(uniform = 1/{n_tok} = {uniform:.4f})",
        f"  {DEFINITION}",
        "  block " + "".join(f"{t:>15}" for t in targets),
    ]
    lines += [f"  {b:>5} " + "".join(f"{v:>15.4f}" for v in r) for b, r in zip(per_block.index, per_block.values)]
    for t in targets[:-2] + ["massive"]:
        if heads[t].notna().any():
            best = heads.sort_values(t, ascending=False).head(3)
            lines.append(
                f"  heads attending most to {t}: "
                + ", ".join(f"{head_name(r.layer, r.head)} ({getattr(r, t):.2f})" for r in best.itertuples())
            )
    shown = [
        t
        for t in ["cls", *(f"reg{r}" for r in range(roles.n_registers)), "massive", "top_norm_patch"]
        if heads[t].notna().any()
    ]
    return ExperimentResult(
        tables={"head_attention": heads, "block_attention": per_block.reset_index()},
        figures={"head_attention": head_heatmaps(heads, shown, f"attention per head: {session.entry.name}")},
        summary={"definition": DEFINITION, "uniform": uniform, "per_block": per_block.reset_index().to_dict("records")},
        lines=lines,
    )
