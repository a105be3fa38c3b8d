"""The scan of Yu et al. (2024), "The Super Weight in Large Language Models": one forward, and at every block the
largest |input| and |output| of the MLP's down-projection on the prompt.

In TransformerLens terms the down-projection is ``blocks.L.mlp.W_out`` [d_mlp, d_model]; its input is
``blocks.L.mlp.hook_post`` [pos, d_mlp] and its output ``blocks.L.hook_mlp_out`` [pos, d_model]. The input spike's
channel is a row of ``W_out`` (a hidden neuron), the output spike's dim a column, and ``W_out[row, col]`` is the
block's candidate super weight: HF's ``mlp.down_proj.weight[col, row]`` (HF stores the transpose, [d_model, d_mlp],
so Yu et al.'s (layer, row, col) is (L, col, row) here). The same forward detects the massive entries
(``core.criterion``) of every block's residual stream, on the prompt and on each window, and measures the windows'
next-token NLL, so the candidates can be set beside the massive activations and their edits against the clean model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int

from ...core.criterion import MassiveCriterion, massive_mask
from ...metrics.perplexity import next_token_nll
from ...models.hook_names import act_name, engine_hooks
from ...models.hooked_model import HookedModel
from ...validation.errors import UsageError
from .scan_inputs import ScanInputs

RELATIONS = {  # (massive before the block, massive after it) at the output spike's entry -> what the block does
    (False, True): "creates", (True, False): "removes", (True, True): "keeps", (False, False): "none"}


@dataclass
class Scan:
    spikes: pd.DataFrame  # one row per block, ranked by |write| (rank 1 first)
    massive: dict[int, Int[torch.Tensor, "_n 3"]]  # per block: (row, position, dim) massive at resid_post; row 0 = prompt
    values: dict[int, Float[torch.Tensor, "_n"]]  # the value at each of those entries
    restore: dict[int, tuple[Int[torch.Tensor, "row"], Float[torch.Tensor, "row"]]]  # per block: each row's largest
    # |mlp_out| in the block's output-spike dim over its own positions: (position, value)
    nll: Float[torch.Tensor, "window"]  # summed next-token NLL of each window
    n_predicted: int  # predicted tokens per window


def down_projections(model: HookedModel) -> list[Float[torch.Tensor, "d_mlp d_model"]]:
    """Every block's ``W_out``; a block without a plain or gated MLP (attention only, a mixture of experts) has no single
    down-projection to scan, and is refused in one line."""
    found = []
    for layer, block in enumerate(model.blocks):
        mlp = getattr(block, "mlp", None)
        weight = getattr(mlp, "W_out", None) if mlp is not None else None
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            what = f"a {type(mlp).__name__}" if mlp is not None else "no MLP"
            raise UsageError(f"super-weights needs a plain or gated MLP, with one down-projection W_out [d_mlp, d_model], "
                             f"in every block: {model.cfg.model_name} block {layer} has {what}")
        found.append(weight)
    return found


def _largest(acts: Float[torch.Tensor, "pos channel"]) -> tuple[int, int, float]:
    """(position, channel, signed value) of the largest |value|."""
    flat = int(acts.abs().flatten().argmax())
    position, channel = divmod(flat, acts.shape[1])
    return position, channel, float(acts[position, channel])


def _entries(mask: Bool[torch.Tensor, "row pos dim"], first_row: int) -> Int[torch.Tensor, "_n 3"]:
    found = mask.nonzero().cpu()
    found[:, 0] += first_row
    return found


@torch.inference_mode()
def scan_down_proj(model: HookedModel, inputs: ScanInputs, criterion: MassiveCriterion) -> Scan:
    """One forward of ``inputs`` (the prompt, then the windows): every block's down-projection spikes on the prompt,
    the massive entries of every block's resid_post on each row, each row's output spike in each block's spike dim (for
    restoring it), and the windows' NLL."""
    w_out = down_projections(model)
    rows: list[dict] = []
    kept: dict[str, torch.Tensor] = {}
    massive: dict[int, torch.Tensor] = {}
    values: dict[int, torch.Tensor] = {}
    restore: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def resid_pre(layer: int) -> Callable:
        def hook(acts: Float[torch.Tensor, "row pos d_model"], hook) -> None:
            prompt = inputs.prompt(acts)
            kept["resid_pre"] = prompt[0].float()
            kept["massive_pre"] = massive_mask(prompt, criterion)[0]
        return hook

    def post(layer: int) -> Callable:
        def hook(acts: Float[torch.Tensor, "row pos d_mlp"], hook) -> None:
            kept["post"] = inputs.prompt(acts)[0].float()
        return hook

    def mlp_out(layer: int) -> Callable:
        def hook(acts: Float[torch.Tensor, "row pos d_model"], hook) -> None:
            prompt_post = kept.pop("post")
            in_position, row, in_value = _largest(prompt_post)
            out_position, col, out_value = _largest(inputs.prompt(acts)[0].float())
            weight = float(w_out[layer][row, col])
            write = float(prompt_post[out_position, row]) * weight
            # each row's own largest |value| in that dim: what restoring the spike writes back
            positions = torch.cat([inputs.prompt(acts)[..., col].abs().argmax(1), inputs.windows(acts)[..., col].abs().argmax(1)])
            values = acts[torch.arange(len(positions), device=acts.device), positions, col]
            restore[layer] = (positions.cpu(), values.float().cpu())
            rows.append({"layer": layer, "row": row, "col": col, "weight": weight, "hf_row": col, "hf_col": row,
                         "input_spike": in_value, "input_position": in_position, "input_token": inputs.labels[in_position],
                         "output_spike": out_value, "output_position": out_position,
                         "output_token": inputs.labels[out_position], "write": write,
                         "write_share": write / out_value if out_value else float("nan"),
                         "resid_before": float(kept["resid_pre"][out_position, col]),
                         "massive_before": bool(kept["massive_pre"][out_position, col])})
        return hook

    def resid_post(layer: int) -> Callable:
        def hook(acts: Float[torch.Tensor, "row pos d_model"], hook) -> None:
            prompt_mask = massive_mask(inputs.prompt(acts), criterion)
            found = torch.cat([_entries(prompt_mask, 0), _entries(massive_mask(inputs.windows(acts), criterion), 1)])
            massive[layer] = found
            at = found.to(acts.device)
            values[layer] = acts[at[:, 0], at[:, 1], at[:, 2]].float().cpu()
            row = rows[-1]
            row["resid_after"] = float(inputs.prompt(acts)[0, row["output_position"], row["col"]])
            row["massive_after"] = bool(prompt_mask[0, row["output_position"], row["col"]])
            row["relation"] = RELATIONS[row["massive_before"], row["massive_after"]]
        return hook

    hooks = []
    for layer in range(model.cfg.n_layers):
        hooks += [(act_name("resid_pre", layer), resid_pre(layer)), (act_name("post", layer), post(layer)),
                  (act_name("mlp_out", layer), mlp_out(layer)), (act_name("resid_post", layer), resid_post(layer))]
    tokens = inputs.tokens.to(model.cfg.device)
    with engine_hooks(model, hooks):
        logits = model(tokens, return_type="logits")
    windows = inputs.window_tokens().to(logits.device)
    nll = next_token_nll(logits[1:, : inputs.window_len], windows).double().sum(1).float().cpu()
    spikes = pd.DataFrame(rows)
    spikes.insert(1, "rank", spikes["write"].abs().rank(ascending=False, method="first").astype(int))
    return Scan(spikes.sort_values("rank").reset_index(drop=True), massive, values, restore, nll, inputs.window_len - 1)
