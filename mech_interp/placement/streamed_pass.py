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

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from jaxtyping import Int
from tqdm.auto import tqdm

from ..core.criterion import MassiveCriterion
from ..core.layer_stats import LayerStats
from ..core.recorder import ActivationRecorder
from ..storage.atomic_files import scratch_path
from ..storage.tensor_files import load_tensors
from ..validation.errors import UsageError

STREAMABLE = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"})
STATE_FILE = "streamed_state.pt"


class _Captured(Exception):
    """Raised by the stand-in first layer: HF's forward up to its first block, with that block's arguments."""

    def __init__(self, hidden: torch.Tensor, kwargs: dict) -> None:
        super().__init__("captured")
        self.hidden, self.kwargs = hidden, kwargs


class _CaptureFirstLayer(torch.nn.Module):
    def forward(self, hidden_states, **kwargs):
        raise _Captured(hidden_states, kwargs)


class SafetensorsWeights:
    """The tensors of an HF directory's safetensors files, read one module at a time straight into its parameters.

    Plain reads at each tensor's offset, no memory map: a mapped file's pages count in the process' memory while it
    is open, which doubled a block's footprint while it loaded. A tensor stored in another dtype goes through one
    buffer of its own size."""

    _DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
    _MAX_HEADER = 100 * 2**20

    def __init__(self, directory: Path) -> None:
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise UsageError(f"{str(directory)!r} holds no .safetensors file: a streamed pass reads safetensors "
                             "(save the model with save_pretrained, or load it whole)")
        self._where: dict[str, tuple[Path, torch.dtype, tuple[int, ...], int, int]] = {}
        for file in files:
            self._where.update(self._header(file))

    def _header(self, file: Path) -> dict[str, tuple[Path, torch.dtype, tuple[int, ...], int, int]]:
        try:
            with file.open("rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if not 0 < size <= self._MAX_HEADER:
                    raise ValueError(f"a header of {size} bytes")
                header = json.loads(f.read(size))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise UsageError(f"{str(file)!r} is not a readable safetensors file ({err})") from None
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info.get("dtype") not in self._DTYPES:
                raise UsageError(f"{str(file)!r}: tensor {name!r} is {info.get('dtype')}: expected one of "
                                 f"{', '.join(self._DTYPES)}")
            begin, end = info["data_offsets"]
            tensors[name] = (file, self._DTYPES[info["dtype"]], tuple(info["shape"]), 8 + size + begin, end - begin)
        return tensors

    def load(self, module: torch.nn.Module, prefix: str, dtype: torch.dtype) -> None:
        """Materialise ``module`` (built on ``meta``) on the CPU from the tensors named ``prefix + name``."""
        module.to_empty(device="cpu")
        with torch.no_grad():
            for name, param in module.named_parameters():
                full = prefix + name
                if full not in self._where:
                    raise UsageError(f"the weights hold no tensor {full!r}: expected the files of a model saved by "
                                     "save_pretrained")
                file, stored, shape, offset, nbytes = self._where[full]
                if shape != tuple(param.shape) or nbytes != param.numel() * stored.itemsize:
                    raise UsageError(f"{str(file)!r}: tensor {full!r} is {list(shape)} ({nbytes} bytes): expected "
                                     f"{list(param.shape)} of {stored}")
                target = param if stored == dtype else torch.empty(shape, dtype=stored)
                with file.open("rb") as f:
                    f.seek(offset)
                    if f.readinto(memoryview(target.view(torch.uint8).numpy()).cast("B")) != nbytes:
                        raise UsageError(f"{str(file)!r} is truncated: tensor {full!r} ends past the end of the file")
                if target is not param:
                    param.copy_(target)


def _identity(directory: Path, windows: torch.Tensor, batch_size: int, k: int, criterion: MassiveCriterion,
              dtype: torch.dtype) -> str:
    """What a saved state must match to be resumed: the weights (names, sizes, mtimes), the windows and the options."""
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.glob("*.safetensors"))
    digest = hashlib.sha256(windows.numpy().tobytes()).hexdigest()
    return json.dumps({"files": files, "windows": [list(windows.shape), digest], "batch_size": batch_size, "k": k,
                       "criterion": [criterion.min_abs, criterion.min_ratio], "dtype": str(dtype)})


def streamed_layer_stats(
    directory: Path,
    windows: Int[torch.Tensor, "n_windows pos"],
    *,
    batch_size: int = 1,
    k: int = 3,
    criterion: MassiveCriterion = MassiveCriterion(),
    dtype: torch.dtype = torch.float32,
    state_dir: Path | None = None,
    label_name: Callable[[int], str] = str,
    label_columns: tuple[str, str] = ("token_id", "token"),
    progress: bool = True,
    after_block: Callable[[int], None] | None = None,
) -> LayerStats:
    """Per-layer statistics of every ``blocks.L.hook_resid_post`` over ``windows``, one block's weights in memory at
    a time. ``after_block(L)`` is called once block L's state is saved (tests use it to stop a pass half-way)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    architecture = (getattr(config, "architectures", None) or ["?"])[0]
    if architecture not in STREAMABLE:
        raise UsageError(f"{architecture} cannot be streamed yet: expected one of {', '.join(sorted(STREAMABLE))}")
    weights = SafetensorsWeights(directory)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    base = model.get_decoder()
    layers: Sequence[torch.nn.Module] = list(base.layers)
    base.rotary_emb = type(base.rotary_emb)(config=config)  # its buffers computed on the CPU, not on meta
    sites = [f"blocks.{i}.hook_resid_post" for i in range(len(layers))]
    recorder = ActivationRecorder(sites, k=k, criterion=criterion)
    batches = list(windows.split(batch_size))
    identity = _identity(directory, windows, batch_size, k, criterion, dtype)
    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None

    start, hidden, arguments = 0, [], []
    saved = load_tensors(state_path, "streamed-pass state", "a state this pass saved") \
        if state_path is not None and state_path.is_file() else None
    if saved is not None and saved["identity"] == identity:
        start, hidden = saved["next_block"], saved["hidden"]
        recorder.load_state_dict(saved["recorder"])
    base.layers = torch.nn.ModuleList([_CaptureFirstLayer()])
    if start == 0:
        weights.load(base.embed_tokens, "model.embed_tokens.", dtype)
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

    bar = tqdm(total=len(layers), initial=start, desc="streamed blocks", unit="block", disable=not progress)
    try:
        for i in range(start, len(layers)):
            layer = layers[i]
            weights.load(layer, f"model.layers.{i}.", dtype)
            with torch.inference_mode():
                for j, tokens in enumerate(batches):
                    out = layer(hidden[j], **arguments[j])  # [batch, pos, d_model]
                    recorder.run_batch(lambda: recorder.record(sites[i], out, tokens))
                    hidden[j] = out
            layer.to("meta")
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


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_path(path)
    torch.save(state, scratch)
    os.replace(scratch, path)
