"""A layer-wise statistics pass that holds one block's weights at a time.

The model is built on PyTorch's ``meta`` device (nothing allocated). The embeddings are materialised from the
safetensors files, every window is embedded, and they are dropped; then, block by block, the block's weights are
read (tensor by tensor, from the memory-mapped files), every window's residual stream goes through it, the
recorder folds in its output (``blocks.L.hook_resid_post``), and the block goes back to ``meta``. Peak memory is one
block's weights, the residual stream of every window and one batch's activations (``memory_plan``'s ``streamed``).

Each block runs HF's own decoder layer with the arguments HF's own model forward gives it (captured at the first
layer: attention mask, rotary cos/sin, positions), on the same batches, so every value equals a whole-model HF
forward's bit for bit on the CPU. Allow-listed families only (``STREAMABLE``): those whose layers all take the same
arguments (no per-layer sliding-window masks, no per-layer caches).

After each block the pass saves its state (the block reached, the residual streams, the recorder) atomically under
``state_dir``; a run killed in the middle resumes at the next block with the same tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Int
from tqdm.auto import tqdm

from ...core.criterion import MassiveCriterion
from ...core.layer_stats import LayerStats
from ...core.recorder import ActivationRecorder
from ...storage.atomic_files import scratch_path
from ...storage.tensor_files import load_tensors
from ...validation.errors import UsageError
from .peak_memory import PeakMemory
from .weight_source import STREAMABLE, WeightSource

STATE_FILE = "streamed_state.pt"


class _Captured(Exception):
    """Raised by the stand-in first layer: HF's forward up to its first block, with that block's arguments."""

    def __init__(self, hidden: torch.Tensor, kwargs: dict) -> None:
        super().__init__("captured")
        self.hidden, self.kwargs = hidden, kwargs


class _CaptureFirstLayer(torch.nn.Module):
    def forward(self, hidden_states, **kwargs):
        raise _Captured(hidden_states, kwargs)


def _identity(weights, windows: torch.Tensor, batch_size: int, k: int, criterion: MassiveCriterion,
              dtype: torch.dtype, blocks: list[int]) -> str:
    """What a saved state must match to be resumed: the weights (names, sizes, mtimes), the windows and the options."""
    digest = hashlib.sha256(windows.cpu().numpy().tobytes()).hexdigest()
    return json.dumps({"files": weights.identity(), "windows": [list(windows.shape), digest],
                       "batch_size": batch_size, "k": k, "criterion": [criterion.min_abs, criterion.min_ratio],
                       "dtype": str(dtype), "blocks": blocks})


def streamed_layer_stats(
    source: WeightSource | Path,
    windows: Int[torch.Tensor, "n_windows pos"],
    *,
    config: Any = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    k: int = 3,
    criterion: MassiveCriterion = MassiveCriterion(),
    dtype: torch.dtype = torch.float32,
    state_dir: Path | None = None,
    blocks: Sequence[int] | None = None,
    label_name: Callable[[int], str] = str,
    label_columns: tuple[str, str] = ("token_id", "token"),
    progress: bool = True,
    after_block: Callable[[int], None] | None = None,
    observe: Callable[[int, list[torch.Tensor]], None] | None = None,
    report: Callable[[str], None] | None = None,
    memory: PeakMemory | None = None,
) -> LayerStats:
    """Per-layer statistics of every ``blocks.L.hook_resid_post`` over ``windows``, one block's weights in memory at
    a time. ``source``: a ``WeightSource`` or an HF directory of safetensors; ``config``: its transformers config
    when already read; ``blocks``: the blocks whose output is recorded, in the tables' order (default all; the pass
    stops after the last). ``after_block(L)`` is called once block L's state is saved (tests use it to stop a pass
    half-way); ``observe(L, outputs)`` sees block L's output of every batch ([batch, pos, d_model] each) before the
    next block runs; ``report`` is told where a resumed pass starts; ``memory`` measures the pass from the embeddings on
    (after the imports and the model built on ``meta``, which are the process', not the pass')."""
    from transformers import AutoModelForCausalLM

    source = source if isinstance(source, WeightSource) else WeightSource("safetensors", Path(source))
    config = config if config is not None else source.config()
    device = torch.device(device)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    architecture = type(model).__name__  # a GGUF's config names none
    if architecture not in STREAMABLE:
        raise UsageError(f"{architecture} cannot be streamed yet: expected one of {', '.join(sorted(STREAMABLE))}")
    weights = source.weights(model)
    _return_freed_blocks()
    with memory if memory is not None else contextlib.nullcontext():
        return _run(model, weights, config, windows, device, batch_size, k, criterion, dtype, state_dir, blocks,
                    label_name, label_columns, progress, after_block, observe, report)


def _run(model, weights, config, windows, device, batch_size, k, criterion, dtype, state_dir, blocks, label_name,
         label_columns, progress, after_block, observe, report) -> LayerStats:
    base = model.get_decoder()
    layers: Sequence[torch.nn.Module] = list(base.layers)
    with torch.device(device):  # its buffers computed on the run's device, not on meta
        base.rotary_emb = type(base.rotary_emb)(config=config)
    blocks = list(blocks) if blocks is not None else list(range(len(layers)))
    if not blocks or not all(0 <= b < len(layers) for b in blocks):
        raise UsageError(f"blocks {blocks} out of range: the model has blocks 0..{len(layers) - 1}")
    sites = {b: f"blocks.{b}.hook_resid_post" for b in blocks}
    recorder = ActivationRecorder(list(sites.values()), k=k, criterion=criterion)
    batches = [b.to(device) for b in windows.split(batch_size)]
    identity = _identity(weights, windows, batch_size, k, criterion, dtype, blocks)
    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None

    start, hidden, arguments = 0, [], []
    saved = load_tensors(state_path, "streamed-pass state", "a state this pass saved") \
        if state_path is not None and state_path.is_file() else None
    if saved is not None and saved["identity"] == identity:
        start, hidden = saved["next_block"], [h.to(device) for h in saved["hidden"]]
        recorder.load_state_dict(saved["recorder"])
        if report is not None:
            report(f"[resume] streamed pass: blocks 0..{start - 1} were run by an earlier attempt; "
                   f"going on at block {start}")
    base.layers = torch.nn.ModuleList([_CaptureFirstLayer()])
    if start == 0:
        weights.load(base.embed_tokens, "model.embed_tokens.", dtype, device)
    else:
        base.embed_tokens = torch.nn.Embedding(1 << 20, 1, device="meta")  # the forward below must not need it
    with torch.inference_mode():
        for tokens in batches:  # HF's forward up to the first block: its input and arguments per batch
            try:
                base(input_ids=tokens if start == 0 else None,
                     inputs_embeds=None if start == 0 else hidden[len(arguments)], use_cache=False)
            except _Captured as captured:
                arguments.append(captured.kwargs)
                if start == 0:
                    hidden.append(captured.hidden)
    base.embed_tokens.to("meta")

    last = max(blocks)
    bar = tqdm(total=last + 1, initial=start, desc="streamed blocks", unit="block", disable=not progress)
    try:
        for i in range(start, last + 1):
            layer = layers[i]
            weights.load(layer, f"model.layers.{i}.", dtype, device)
            with torch.inference_mode():
                for j, tokens in enumerate(batches):
                    out = layer(hidden[j], **arguments[j])  # [batch, pos, d_model]
                    if i in sites:
                        recorder.run_batch(lambda: recorder.record(sites[i], out, tokens))
                    hidden[j] = out
            layer.to("meta")
            if observe is not None:
                observe(i, hidden)
            if state_path is not None:
                _save(state_path, {"identity": identity, "next_block": i + 1, "hidden": hidden,
                                   "recorder": recorder.state_dict()})
            bar.update()
            if after_block is not None:
                after_block(i)
    finally:
        bar.close()
    return recorder.result(layer_of=lambda site: int(site.split(".")[1]), label_name=label_name,
                           label_columns=label_columns)


def _return_freed_blocks() -> None:
    """glibc's malloc raises its mmap threshold to the size of each large block freed, so the next block's tensors
    come from the heap, whose freed pages stay with the process: measured, 5.6 blocks resident where the plan holds
    one. A fixed threshold (the default's starting value) serves every tensor of 128 KiB or more with its own
    mapping, returned to the system when the block is dropped."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD; other C libraries lack mallopt or ignore the option
    except (OSError, AttributeError):
        return


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_path(path)
    torch.save(state, scratch)
    os.replace(scratch, path)
