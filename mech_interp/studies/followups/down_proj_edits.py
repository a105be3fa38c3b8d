"""One candidate weight ``W_out[row, col]`` of one block, edited several ways in one forward: the batch is repeated
once per condition, and each copy sees the weight multiplied by its condition's factor.

Scaling one weight by s changes only that block's MLP output in dim ``col``, by (s - 1) x post[..., row] x
W_out[row, col]; the edit adds exactly that on ``hook_mlp_out``, so the weight itself is never written (a copy per
condition would not fit in one forward) and every condition shares the forward. It equals editing the weight up to
float rounding (tests/test_super_weights.py checks it against HF's down_proj edited in place). Restoring the spike
(Yu et al.'s "super activation") then writes each row's clean output spike back at its own position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from ...metrics.perplexity import next_token_nll
from ...models.hook_names import act_name, engine_hooks
from ...models.hooked_model import HookedModel
from .down_proj_scan import down_projections
from .scan_inputs import ScanInputs


@dataclass(frozen=True)
class Condition:
    name: str
    scale: float  # the weight's factor
    restore: bool = False  # each row's clean output spike written back after the edit


def conditions(scales: list[float]) -> list[Condition]:
    return [Condition("zero", 0.0), Condition("zero, spike restored", 0.0, restore=True),
            *(Condition(f"x{s:g}", s) for s in scales)]


@dataclass
class Edited:
    values: Float[torch.Tensor, "condition read"]  # the prompt's residual stream at each read entry
    nll: Float[torch.Tensor, "condition window"]  # summed next-token NLL of each window


@torch.inference_mode()
def edited_forward(model: HookedModel, inputs: ScanInputs, layer: int, row: int, col: int, edits: list[Condition],
                   restore: tuple[Int[torch.Tensor, "row"], Float[torch.Tensor, "row"]],
                   reads: list[tuple[int, int, int]]) -> Edited:
    """One forward of ``inputs`` once per condition of ``edits`` (condition-major), block ``layer``'s
    ``W_out[row, col]`` scaled in each; ``restore``: each input row's clean output spike in dim ``col`` (position,
    value); ``reads``: (block, position, dim) entries of the prompt's resid_post to read."""
    n_rows, n_edits = inputs.tokens.shape[0], len(edits)
    weight = down_projections(model)[layer][row, col].detach()
    factors = torch.tensor([e.scale for e in edits]).repeat_interleave(n_rows)[:, None] - 1
    restoring = torch.tensor([e.restore for e in edits]).repeat_interleave(n_rows).nonzero().flatten()
    restore_at, restore_values = restore[0].repeat(n_edits)[restoring], restore[1].repeat(n_edits)[restoring]
    prompts = torch.arange(n_edits) * n_rows  # the prompt's row in each condition's copy
    kept: dict[str, torch.Tensor] = {}
    values = torch.zeros(n_edits, len(reads))

    # every index goes to where the activations are: a model split over devices has its blocks on several
    def keep_post(post: Float[torch.Tensor, "row pos d_mlp"], hook) -> None:
        kept["post"] = post[..., row].clone()

    def edit(out: Float[torch.Tensor, "row pos d_model"], hook) -> Float[torch.Tensor, "row pos d_model"]:
        out = out.clone()
        device = out.device
        out[..., col] += (factors.to(device) * kept.pop("post").to(device) * weight.to(device)).to(out.dtype)
        out[restoring.to(device), restore_at.to(device), col] = restore_values.to(device, out.dtype)
        return out

    def read(block: int):
        def hook(acts: Float[torch.Tensor, "row pos d_model"], hook) -> None:
            for i, (at, position, dim) in enumerate(reads):
                if at == block:
                    values[:, i] = acts[prompts.to(acts.device), position, dim].float().cpu()
        return hook

    hooks = [(act_name("post", layer), keep_post), (act_name("mlp_out", layer), edit)]
    hooks += [(act_name("resid_post", block), read(block)) for block in sorted({r[0] for r in reads})]
    tokens = inputs.tokens.repeat(n_edits, 1)
    with engine_hooks(model, hooks):
        logits = model(tokens.to(model.cfg.device), return_type="logits")
    windows = torch.ones(n_edits * n_rows, dtype=torch.bool)
    windows[prompts] = False
    nll = next_token_nll(logits[windows.to(logits.device), : inputs.window_len],
                         tokens[windows, : inputs.window_len].to(logits.device))
    return Edited(values, nll.double().sum(1).float().cpu().view(n_edits, n_rows - 1))
