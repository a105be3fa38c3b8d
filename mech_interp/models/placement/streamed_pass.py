"""Passes that hold one block's weights at a time (``streamed_model``), and the layer-wise statistics pass.

Every window is embedded, then, block by block, the block's weights are read, every window's residual stream goes
through it with the pass' hooks on the block's sites (``streamed_sites``), and the block is dropped: ``run_blocks``.
The layer-wise pass' hook folds each block's output (``blocks.L.hook_resid_post``) into a recorder. Peak memory
is one block's weights, the residual stream of every window and one batch's activations (``memory_plan``'s
``streamed``). Values equal a whole-model HF forward's bit for bit on the CPU.

After each block the pass saves its state (the block reached, the residual streams or the generation of their
spilled files, what the hooks keep: the recorder) atomically under ``state_dir``; a run killed in the middle resumes at the next block
with the same tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ...core.criterion import MassiveCriterion
from ...core.layer_stats import LayerStats
from ...core.recorder import ActivationRecorder
from ...storage.atomic_files import scratch_path
from ...storage.tensor_files import load_tensors
from ...validation.errors import UsageError
from .peak_memory import PeakMemory
from .residual_streams import ResidualStreams
from .streamed_model import StreamedModel, return_freed_blocks
from .streamed_sites import HookFn, StreamedHookPoint, streamed_hooks
from .weight_source import WeightSource

STATE_FILE = "streamed_state.pt"


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
    spill_dir: Path | None = None,
    blocks: Sequence[int] | None = None,
    label_name: Callable[[int], str] = str,
    label_columns: tuple[str, str] = ("token_id", "token"),
    progress: bool = True,
    after_block: Callable[[int], None] | None = None,
    observe: Callable[[int, ResidualStreams], None] | None = None,
    report: Callable[[str], None] | None = None,
    memory: PeakMemory | None = None,
) -> LayerStats:
    """Per-layer statistics of every ``blocks.L.hook_resid_post`` over ``windows``, one block's weights in memory at
    a time. ``source``: a ``WeightSource`` or an HF directory of safetensors; ``config``: its transformers config
    when already read; ``spill_dir``: where the residual streams wait between blocks, on disk, instead of in memory
    (``residual_streams``); ``blocks``: the blocks whose output is recorded, in the tables' order (default all; the pass
    stops after the last). ``after_block(L)`` is called once block L's state is saved (tests use it to stop a pass
    half-way); ``observe(L, outputs)`` sees block L's output of every batch ([batch, pos, d_model] each) before the
    next block runs; ``report`` is told where a resumed pass starts; ``memory`` measures the pass from the embeddings on
    (after the imports and the model built on ``meta``, which are the process', not the pass')."""
    streamed = StreamedModel(source, config, dtype, device)
    streamed.rehearse()
    return_freed_blocks()
    n_layers = streamed.n_layers
    blocks = list(blocks) if blocks is not None else list(range(n_layers))
    if not blocks or not all(0 <= b < n_layers for b in blocks):
        raise UsageError(f"blocks {blocks} out of range: the model has blocks 0..{n_layers - 1}")
    sites = {b: f"blocks.{b}.hook_resid_post" for b in blocks}
    recorder = ActivationRecorder(list(sites.values()), k=k, criterion=criterion)

    def record(acts: Float[torch.Tensor, "batch pos d_model"], hook: StreamedHookPoint) -> None:
        recorder.run_batch(lambda: recorder.record(hook.name, acts, hook.tokens))

    what = {"pass": "layer_stats", "k": k, "criterion": [criterion.min_abs, criterion.min_ratio], "dtype": str(dtype),
            "blocks": blocks}
    with memory if memory is not None else contextlib.nullcontext():
        run_blocks(streamed, windows, lambda i: [(sites[i], record)] if i in sites else [], last=max(blocks),
                   what=what, kept=recorder, batch_size=batch_size, state_dir=state_dir, spill_dir=spill_dir,
                   progress=progress, after_block=after_block, observe=observe, report=report)
    return recorder.result(layer_of=lambda site: int(site.split(".")[1]), label_name=label_name,
                           label_columns=label_columns)


class Stateful(Protocol):
    """What a pass saves beside its streams so that it can resume: a recorder's ``state_dict``/``load_state_dict``."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _identity(weights, windows: torch.Tensor, batch_size: int, what: dict) -> str:
    """What a saved state must match to be resumed: the weights (names, sizes, mtimes), the windows, the batches and
    what the pass computes."""
    digest = hashlib.sha256(windows.cpu().numpy().tobytes()).hexdigest()
    return json.dumps({"files": weights.identity(), "windows": [list(windows.shape), digest],
                       "batch_size": batch_size, **what}, default=str)


def run_blocks(
    streamed: StreamedModel,
    windows: Int[torch.Tensor, "n_windows pos"],
    fwd_hooks: Callable[[int], Sequence[tuple[str, HookFn]]],
    *,
    last: int,
    what: dict | None = None,
    kept: Stateful | None = None,
    batch_size: int = 1,
    state_dir: Path | None = None,
    spill_dir: Path | None = None,
    progress: bool = True,
    desc: str = "streamed blocks",
    after_block: Callable[[int], None] | None = None,
    observe: Callable[[int, ResidualStreams], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> ResidualStreams:
    """Every window through blocks 0..``last``, one block's weights at a time, with ``fwd_hooks(L)`` (TransformerLens
    names of block L's sites, ``streamed_sites``) on block L. What the hooks keep lives in ``kept``, saved with the
    streams after every block under ``state_dir`` (when given) and restored from there by a rerun whose ``what`` (what
    the pass computes), weights, windows and batches are the same. Returns the residual streams after ``last``."""
    if not 0 <= last < streamed.n_layers:
        raise UsageError(f"block {last} out of range: the model has blocks 0..{streamed.n_layers - 1}")
    batches = [b.to(streamed.device) for b in windows.split(batch_size)]
    rows = [slice(j * batch_size, j * batch_size + len(b)) for j, b in enumerate(batches)]
    identity = _identity(streamed.weights, windows, batch_size, what or {})
    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None

    streams = ResidualStreams(len(batches), spill_dir, streamed.device)
    start, resumed = 0, False
    saved = load_tensors(state_path, "streamed-pass state", "a state this pass saved") \
        if state_path is not None and state_path.is_file() else None
    if saved is not None and saved.get("identity") == identity and streams.restore(saved.get("streams", {})):
        start, resumed = saved["next_block"], True
        if kept is not None:
            kept.load_state_dict(saved["kept"])
        if report is not None:
            report(f"[resume] streamed pass: blocks 0..{start - 1} were run by an earlier attempt; "
                   f"going on at block {start}")
    arguments = streamed.embed(batches, streams, resumed)

    bar = tqdm(total=last + 1, initial=start, desc=desc, unit="block", disable=not progress)
    try:
        for i in range(start, last + 1):
            hooks = list(fwd_hooks(i))
            with streamed.block(i) as layer, torch.inference_mode():
                for j, tokens in enumerate(batches):
                    with streamed_hooks(layer, hooks, tokens, rows[j]):
                        streams[j] = layer(streams[j], **arguments[j][i])  # [batch, pos, d_model]
            streams.commit()
            if observe is not None:
                observe(i, streams)
            if state_path is not None:
                _save(state_path, {"identity": identity, "next_block": i + 1, "streams": streams.state(),
                                   "kept": kept.state_dict() if kept is not None else {}})
            streams.prune()
            bar.update()
            if after_block is not None:
                after_block(i)
    finally:
        bar.close()
    return streams


@contextlib.contextmanager
def pass_state_dir(pieces: Any, key: dict) -> Iterator[Path]:
    """Where a run's streamed pass keeps its state (and spilled streams): the run's resumable piece ``key``; a scratch
    directory, removed afterwards, for a call without pieces (a notebook's)."""
    if pieces is not None:
        yield pieces.piece_dir(key)
        return
    with tempfile.TemporaryDirectory(prefix="mech-interp-streamed-") as scratch:
        yield Path(scratch)


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_path(path)
    torch.save(state, scratch)
    os.replace(scratch, path)
