"""What the head experiments run on: windows of a text (and held-out windows for mean ablation),
the prompt, and the blocks where the massive entries are."""

from __future__ import annotations

from pathlib import Path

import torch
from jaxtyping import Int

from ...data.texts import load_text
from ...data.tokens import encode, windows
from ...interventions.heads import HeadMeans
from ...models.context import ModelContext
from ...models.hooked_model import HookedModel
from ...models.placement.streamed_context import StreamedContext
from ...validation.errors import NoMassiveActivations, UsageError
from .reduced_forward import Probe

N_REFERENCE = 4  # held-out windows whose mean hook_z a mean ablation writes


def sequences(context: ModelContext | StreamedContext, config, held_out: bool = False
              ) -> tuple[Int[torch.Tensor, "seq pos"], Int[torch.Tensor, "_ref pos"], str]:
    """``config.n_seqs`` windows of ``config.text``; with ``held_out``, up to ``N_REFERENCE`` more
    windows after them (never the evaluated ones) for mean ablation."""
    source = load_text(config.text)
    extra = N_REFERENCE if held_out else 0
    seqs = windows(context.tokenizer, source.text, config.seq_len, config.n_seqs + extra, context.options.prepend_bos,
                   source.name, context.n_ctx, add_special_tokens=source.special_tokens)
    if held_out and seqs.shape[0] <= config.n_seqs:
        raise UsageError(f"text {config.text!r} has {seqs.shape[0]} windows of {config.seq_len} tokens: mean ablation "
                         f"needs held-out windows after the {config.n_seqs} evaluated ones (fewer --n-seqs or a longer text)")
    return seqs[: config.n_seqs], seqs[config.n_seqs:], source.origin


def prompt_tokens(context: ModelContext | StreamedContext, prompt: str) -> Int[torch.Tensor, "one pos"]:
    tokens = encode(context.tokenizer, prompt, context.options.prepend_bos)
    if tokens.numel() < 2:
        raise UsageError(f"--prompt {prompt!r} is {tokens.numel()} token long: need at least 2")
    return tokens[None]


def head_means(model: HookedModel, how: str, reference: torch.Tensor, layers) -> dict[int, HeadMeans] | None:
    if how != "mean":
        return None
    return HeadMeans.measure_all(model, reference.split(4), layers, per_position=True)


def streamed_head_means(context: StreamedContext, how: str, reference: Int[torch.Tensor, "_ref pos"],
                        layers, spill_dir: Path | None = None) -> dict[int, HeadMeans] | None:
    """``head_means`` one block's weights at a time: every head's ``z`` (``o_proj``'s input per head) averaged per
    position over the reference windows, blocks 0..max(``layers``) read once."""
    if how != "mean":
        return None
    from ...core.running_stats import Mean
    from ...models.hook_names import act_name
    from ...models.placement.streamed_model import StreamedModel
    from ...models.placement.streamed_pass import run_blocks

    layers = sorted(set(layers))
    stats = {layer: Mean() for layer in layers}
    streamed = StreamedModel(context.source, context.config, getattr(torch, context.options.dtype), context.device)
    run_blocks(streamed, reference, lambda i: [(act_name("z", i), lambda z, hook: stats[i].add(z))] if i in stats else [],
               last=layers[-1], batch_size=4, spill_dir=spill_dir, desc="head means (streamed blocks)")
    return {layer: HeadMeans(layer, stat.mean().float(), True, reference.shape[0]) for layer, stat in stats.items()}


def massive_layers(clean: Probe, n_seq: int, min_fraction: float = 0.5) -> list[int]:
    """Blocks where at least ``min_fraction`` of the sequences have a massive entry (clean run)."""
    return [layer for layer in clean.layers
            if len(set(clean.entries[layer][:, 0].tolist())) >= max(1, min_fraction * n_seq)]


def first_massive(clean: Probe, n_seq: int, model_name: str, criterion) -> int:
    layers = massive_layers(clean, n_seq)
    if not layers:
        raise NoMassiveActivations(f"no massive activations found in {model_name} by {criterion}: pass --layer or "
                                   "loosen the criterion (--min-abs / --min-ratio)")
    return layers[0]
