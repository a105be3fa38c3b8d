"""Per-layer statistics of a hooked language model (either engine), computed inside hooks while it runs.

Feeds the core ``ActivationRecorder`` from TransformerLens hook points with token ids as position
labels; nothing is cached. The forward stops after the last hooked block. On a GPU the recorder reads
nothing back until a batch has run through (one host copy per batch).
"""

from __future__ import annotations

from functools import partial
from typing import Iterable, Sequence

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ..core.criterion import MassiveCriterion
from ..core.layer_stats import LayerStats
from ..core.recorder import ActivationRecorder
from ..core.token_layout import TokenLayout
from ..models.hook_names import block_of, check_hook_names, engine_hooks, resid_post
from ..models.hooked_model import HookedModel

TOKEN_COLUMNS = ("token_id", "token")
# Models with learned positions in front of the tokens (``layout.n_prefix_tokens``, e.g. a sink
# token) label them so; they are no vocabulary entry.
PREFIX_LABEL, PREFIX_NAME = -1, "<prefix>"


def stop_layer(model: HookedModel, hook_names: Sequence[str]) -> int | None:
    """Blocks after the last hooked one need not run; ``None`` when a non-block hook needs the end."""
    blocks = [block_of(n) for n in hook_names]
    if any(b is None for b in blocks):
        return None
    last = max(blocks) + 1
    return None if last >= model.cfg.n_layers else last


def collect_layer_stats(
    model: HookedModel,
    batches: Iterable[Int[torch.Tensor, "_batch _pos"]],  # sizes may differ from batch to batch
    hook_names: Sequence[str] | None = None,
    k: int = 3,
    criterion: MassiveCriterion = MassiveCriterion(),
    progress: bool = True,
    total: int | None = None,
    *,
    layout: TokenLayout = TokenLayout(),
) -> LayerStats:
    """Run ``model`` over token batches and return per-layer statistics (default: every resid_post).
    ``layout``: the model's prefix positions, labelled ``PREFIX_LABEL`` in front of each batch's tokens.

    ```python
    >>> import mech_interp as mi
    >>> model = mi.load_model("planted:gpt2-tiny", device="cpu")  # a massive entry planted at block 2
    >>> seqs = mi.windows(model.tokenizer, mi.load_text("builtin").text, seq_len=64, n_windows=4)
    >>> stats = mi.layer_stats(model, seqs.split(2), progress=False)
    >>> stats.massive[["layer", "dim"]].values.tolist()  # (block, dim) of every massive entry found
    [[2, 17], [3, 17]]

    ```
    """
    hook_names = list(hook_names) if hook_names else [resid_post(i) for i in range(model.cfg.n_layers)]
    check_hook_names(model.hook_dict, hook_names)
    recorder = ActivationRecorder(hook_names, k=k, criterion=criterion)
    current: dict[str, torch.Tensor] = {}
    n_prefix = layout.n_prefix_tokens

    total = total if total is not None else len(batches) if hasattr(batches, "__len__") else None
    bar: list[tqdm] = []  # shown once the first site is recorded: a refused --k must not leave a 0% bar above its error

    def hook(acts: Float[torch.Tensor, "batch pos *rest"], hook, site: str) -> None:
        # the site as asked, not hook.name: a TransformerBridge names its hook points natively (blocks.3.hook_out)
        recorder.record(site, acts, current["labels"])
        if not bar:
            bar.append(tqdm(desc="layer statistics", unit="batch", total=total, disable=not progress))

    stop = stop_layer(model, hook_names)
    device = model.cfg.device
    try:
        with torch.inference_mode(), engine_hooks(model, [(name, partial(hook, site=name)) for name in hook_names]):
            for tokens in batches:
                current["labels"] = torch.cat([tokens.new_full((tokens.shape[0], n_prefix), PREFIX_LABEL), tokens], dim=1)
                on_device = tokens.to(device)
                recorder.run_batch(lambda: model(on_device, return_type=None, stop_at_layer=stop))
                bar[0].update()
    finally:
        if bar:
            bar[0].close()
    return recorder.result(layer_of=block_of, label_name=lambda t: label_text(model, t), label_columns=TOKEN_COLUMNS)


def label_text(model: HookedModel, label: int) -> str:
    return PREFIX_NAME if label == PREFIX_LABEL else model.tokenizer.decode([label])
