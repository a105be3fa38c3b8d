"""Direct contributions to residual-stream entries: who writes a massive activation, down to the neuron and weight.

The residual stream after block L is the embedding plus every earlier attention and MLP output, and
each attention output is the sum of its heads' ``z[h] @ W_O[h]`` plus ``b_O``. So the value of one
entry (sequence b, position p, dim d) after block L splits exactly into direct writes:

- ``embed`` (``hook_embed``), ``pos_embed`` (``hook_pos_embed``, learned absolute positions only) and
  ``prefix`` (the learned prefix positions of a model whose layout has them: ``blocks.0.hook_resid_pre`` there);
- ``head`` (l, h): ``z[b, p, h] @ W_O[h][:, d]`` for every block l <= L, computed from ``hook_z``;
- ``attn_bias`` (l): ``b_O[d]``;
- ``mlp`` (l): ``hook_mlp_out[b, p, d]``.

``closure`` = the residual value (read from ``hook_resid_post``) minus the sum of the writes: float
rounding on architectures whose attention output is that sum, the size of whatever the decomposition
misses elsewhere (e.g. a norm after the attention output). The sum is never forced to close.

Inside one MLP the write to dim d splits over hidden neurons: ``post[n] * W_out[n, d]`` (plus
``b_out[d]``), and a neuron's pre-activation splits over its input weights: ``x[i] * W_in[i, n]``
(and ``x[i] * W_gate[i, n]`` for gated MLPs), ``x`` being what enters the MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int

from ..core.head_names import head_name
from ..core.token_layout import TokenLayout
from ..models.hook_names import act_name, engine_hooks
from ..models.hooked_model import HookedModel

COMPONENT_KINDS = ("embed", "pos_embed", "prefix", "head", "attn_bias", "mlp")
WRITE_DEFINITION = ("direct write of a component to entry (position, dim): embed / pos_embed = the embedding "
                    "hooks; head LlHh = z[l][pos, h] @ W_O[l][h][:, dim]; attn_bias l = b_O[l][dim]; mlp l = "
                    "hook_mlp_out[l][pos, dim]; the value after block L is the sum over components of blocks <= L")


@dataclass
class Writes:
    """Direct writes of every component to a set of entries (one forward)."""

    components: pd.DataFrame  # one row per component: name, kind, layer (-1: before block 0), head (-1: none)
    writes: Float[torch.Tensor, "entry component"]
    resid_post: Float[torch.Tensor, "layer entry"]  # the value read from blocks.L.hook_resid_post
    entries: Int[torch.Tensor, "entry 3"]  # (batch row, position, dim)

    def upto(self, layer: int) -> Float[torch.Tensor, "entry component"]:
        """Writes that are in the residual stream after block ``layer`` (components of later blocks zeroed)."""
        keep = torch.tensor((self.components["layer"] <= layer).to_numpy())
        return self.writes * keep[None]

    def closure(self, layer: int) -> Float[torch.Tensor, "entry"]:
        """The residual value after block ``layer`` minus the sum of the writes up to it."""
        return self.resid_post[layer] - self.upto(layer).double().sum(1).float()

    def table(self, layers: list[int], labels: pd.DataFrame | None = None) -> pd.DataFrame:
        """Long table: one row per (layer, entry, component) with the write and its share of the value."""
        frames = []
        for layer in layers:
            upto = self.upto(layer)
            for e in range(self.entries.shape[0]):
                b, p, d = self.entries[e].tolist()
                value = float(self.resid_post[layer, e])
                keep = (self.components["layer"] <= layer).to_numpy()
                frame = self.components[keep].copy()
                frame.insert(0, "layer_measured", layer)
                frame.insert(1, "sequence", b)
                frame.insert(2, "position", p)
                frame.insert(3, "dim", d)
                frame["write"] = upto[e, torch.tensor(keep)].numpy()
                frame["resid_value"] = value
                frame["share_of_value"] = frame["write"] / value if value != 0 else float("nan")
                frame["closure"] = float(self.closure(layer)[e])
                frames.append(frame)
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if labels is not None and not out.empty:
            out = out.merge(labels, on=["sequence", "position"], how="left")
        return out


def component_table(model: HookedModel, has_pos: bool, n_prefix: int) -> pd.DataFrame:
    rows: list[dict[str, Any]] = [{"component": "embed", "kind": "embed", "layer": -1, "head": -1}]
    if has_pos:
        rows.append({"component": "pos_embed", "kind": "pos_embed", "layer": -1, "head": -1})
    if n_prefix:
        rows.append({"component": "prefix", "kind": "prefix", "layer": -1, "head": -1})
    for layer in range(model.cfg.n_layers):
        rows += [{"component": head_name(layer, h), "kind": "head", "layer": layer, "head": h}
                 for h in range(model.cfg.n_heads)]
        rows.append({"component": f"attn_bias {layer}", "kind": "attn_bias", "layer": layer, "head": -1})
        rows.append({"component": f"mlp {layer}", "kind": "mlp", "layer": layer, "head": -1})
    return pd.DataFrame(rows)


def output_bias(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """``module.b_O`` / ``module.b_out``, or None where the layer has none: a HookedTransformer keeps a zero
    bias for bias-free families, a TransformerBridge raises instead (its weight view finds no HF bias)."""
    try:
        return getattr(module, name)
    except AttributeError:
        return None


@torch.inference_mode()
def direct_writes(model: HookedModel, tokens: Int[torch.Tensor, "batch pos"],
                  entries: Int[torch.Tensor, "entry 3"], fwd_hooks: list | None = None, *,
                  layout: TokenLayout) -> Writes:
    """Direct writes of every component to each entry (batch row, residual position, dim), in one
    forward, reduced inside the hooks (nothing of size [batch, pos, ...] is kept). Positions are
    residual positions: position p < ``layout.n_prefix_tokens`` is a prefix."""
    cfg = model.cfg
    n_prefix = layout.n_prefix_tokens
    has_pos = cfg.positional_embedding_type in ("standard", "shortformer")
    components = component_table(model, has_pos, n_prefix)
    index = {name: i for i, name in enumerate(components["component"])}
    n_entries = entries.shape[0]
    writes = torch.zeros(n_entries, len(components), dtype=torch.float64)
    resid = torch.zeros(cfg.n_layers, n_entries)
    b, p, d = (entries[:, i].to(cfg.device) for i in range(3))
    token_pos = p - n_prefix
    is_token = token_pos >= 0

    def embedding(name: str):
        def hook(acts: Float[torch.Tensor, "batch tok d_model"], hook) -> None:  # embeddings of the T tokens
            values = acts[b[is_token], token_pos[is_token], d[is_token]].double().cpu()
            writes[is_token.cpu(), index[name]] = values
        return hook

    def prefix(acts: Float[torch.Tensor, "batch pos d_model"], hook) -> None:  # blocks.0.hook_resid_pre
        if n_prefix:
            writes[~is_token.cpu(), index["prefix"]] = acts[b[~is_token], p[~is_token], d[~is_token]].double().cpu()

    def heads(z: Float[torch.Tensor, "batch pos head_index d_head"], hook) -> None:
        layer = hook.layer()
        w_o = model.blocks[layer].attn.W_O  # [head_index, d_head, d_model]
        per_head = torch.einsum("ehk,hke->eh", z[b, p].to(w_o.dtype), w_o[:, :, d])  # [entry, head_index]
        first = index[head_name(layer, 0)]
        writes[:, first:first + cfg.n_heads] = per_head.double().cpu()
        b_o = output_bias(model.blocks[layer].attn, "b_O")
        if b_o is not None:
            writes[:, index[f"attn_bias {layer}"]] = b_o[d].double().cpu()

    def mlp(out: Float[torch.Tensor, "batch pos d_model"], hook) -> None:
        writes[:, index[f"mlp {hook.layer()}"]] = out[b, p, d].double().cpu()

    def post(acts: Float[torch.Tensor, "batch pos d_model"], hook) -> None:
        resid[hook.layer()] = acts[b, p, d].float().cpu()

    hooks = [("hook_embed", embedding("embed")), (act_name("resid_pre", 0), prefix)]
    if has_pos:
        hooks.append(("hook_pos_embed", embedding("pos_embed")))
    for layer in range(cfg.n_layers):
        hooks += [(act_name("z", layer), heads), (act_name("mlp_out", layer), mlp),
                  (act_name("resid_post", layer), post)]
    with engine_hooks(model, list(fwd_hooks or []) + hooks):
        model(tokens.to(cfg.device), return_type=None)
    return Writes(components, writes.float(), resid, entries.cpu())


@dataclass
class NeuronWrites:
    """One MLP's write to one entry, split over hidden neurons, and the top neurons' input weights."""

    layer: int
    entry: tuple[int, int, int]
    neurons: pd.DataFrame  # neuron, activation (hook_post), w_out (W_out[n, dim]), write, share
    b_out: float
    mlp_out: float  # hook_mlp_out at the entry, for the closure
    input_weights: pd.DataFrame  # matrix (W_in / W_gate), neuron, input_index, x, weight, contribution


@torch.inference_mode()
def neuron_writes(model: HookedModel, tokens: Int[torch.Tensor, "batch pos"], layer: int,
                  entry: tuple[int, int, int], top_neurons: int = 5, top_weights: int = 10) -> NeuronWrites:
    """Split block ``layer``'s MLP write to ``entry`` over its hidden neurons (``hook_post`` x
    ``W_out`` rows), and the top neurons' pre-activations over their input weights."""
    mlp_module = model.blocks[layer].mlp
    if not hasattr(mlp_module, "W_out") or mlp_module.W_out.dim() != 2:
        raise NotImplementedError(f"block {layer}'s MLP ({type(mlp_module).__name__}) has no single W_out to split")
    b, p, d = entry
    kept: dict[str, torch.Tensor] = {}

    def keep_post(post: Float[torch.Tensor, "batch pos d_mlp"], hook) -> None:
        kept["post"] = post[b, p].float().cpu()

    def keep_out(out: Float[torch.Tensor, "batch pos d_model"], hook) -> None:
        kept["mlp_out"] = out[b, p, d].float().cpu()

    def keep_input(module, args) -> None:  # what enters the MLP: ln2's output, [batch, pos, d_model]
        kept["x"] = args[0][b, p].float().cpu()

    handle = mlp_module.register_forward_pre_hook(keep_input)
    try:
        with engine_hooks(model, [(act_name("post", layer), keep_post), (act_name("mlp_out", layer), keep_out)]):
            model(tokens.to(model.cfg.device), return_type=None, stop_at_layer=layer + 1)
    finally:
        handle.remove()
    w_out = mlp_module.W_out[:, d].float().cpu()  # [d_mlp]
    write = kept["post"] * w_out
    b_out = output_bias(mlp_module, "b_out")
    b_out_d = float(b_out[d]) if b_out is not None else 0.0
    value = float(write.double().sum() + b_out_d)
    order = write.abs().argsort(descending=True)
    neurons = pd.DataFrame({"neuron": order.numpy(), "activation": kept["post"][order].numpy(),
                            "w_out": w_out[order].numpy(), "write": write[order].numpy()})
    neurons["share_of_mlp_write"] = neurons["write"] / value if value != 0 else float("nan")
    neurons["rank"] = range(len(neurons))
    rows = []
    for n in order[:top_neurons].tolist():
        for name in ("W_in", "W_gate"):
            weight = getattr(mlp_module, name, None)
            if weight is None:
                continue
            column = weight[:, n].float().cpu()  # [d_model]
            contribution = kept["x"] * column
            for i in contribution.abs().argsort(descending=True)[:top_weights].tolist():
                rows.append({"matrix": name, "neuron": n, "input_index": i, "x": float(kept["x"][i]),
                             "weight": float(column[i]), "contribution": float(contribution[i]),
                             "pre_activation": float(contribution.double().sum())})
    inputs = pd.DataFrame(rows, columns=["matrix", "neuron", "input_index", "x", "weight", "contribution", "pre_activation"])
    return NeuronWrites(layer, entry, neurons, b_out_d, kept["mlp_out"].item(), inputs)
