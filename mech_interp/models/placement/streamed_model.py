"""An HF causal language model built on PyTorch's ``meta`` device whose parts are read in one at a time.

``embed`` materialises the embeddings and runs HF's own model forward for every batch through stand-ins of its
decoder layers, which pass the hidden states on untouched and keep what HF gives each layer: the first layer's input,
and every layer's arguments (attention mask, rotary cos/sin, positions; a sliding-window layer's own mask and a local
layer's own rotary embedding where the family has them). It then drops the embeddings. ``block(L)`` reads block L's
weights for the time of a ``with``; ``head()`` reads the final norm and the LM head (the embeddings again when tied).
Every block then runs HF's own decoder layer with HF's own arguments for that layer on the same batches, so every
value equals a whole-model HF forward's bit for bit on the CPU. Allow-listed families only (``STREAMABLE``: those whose
stored names, layers and attention modules the streamed pass and its sites read, each checked against HF in the tests).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ...validation.errors import UsageError
from .residual_streams import ResidualStreams
from .weight_source import STREAMABLE, WeightSource


class _Captured(Exception):
    """Raised by the last stand-in layer: HF's forward up to its blocks, with every block's arguments."""

    def __init__(self, hidden: torch.Tensor, kwargs: list[dict]) -> None:
        super().__init__("captured")
        self.hidden, self.kwargs = hidden, kwargs


class _StandIn(torch.nn.Module):
    """Decoder layer ``index`` as HF's forward sees it: its attributes (``attention_type`` picks a layer's mask) are
    the real layer's; its forward keeps its arguments and hands the hidden states on."""

    def __init__(self, layer: torch.nn.Module, index: int, n_layers: int, kept: dict) -> None:
        super().__init__()
        self.__dict__["_layer"] = layer  # not a submodule: its weights stay out of the stand-ins
        self.index, self.n_layers, self.kept = index, n_layers, kept

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_layer"], name)

    def forward(self, hidden_states, *args, **kwargs):
        if args:
            raise UsageError(f"{type(self._layer).__name__} takes positional arguments besides the hidden states: "
                             "its family cannot be streamed")
        if self.index == 0:  # a new forward
            self.kept.update(hidden=hidden_states, kwargs=[])
        self.kept["kwargs"].append(kwargs)
        if self.index == self.n_layers - 1:
            raise _Captured(self.kept.pop("hidden"), self.kept.pop("kwargs"))
        return hidden_states


class StreamedModel:
    def __init__(self, source: WeightSource | Path, config: Any = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", attention: str | None = None) -> None:
        """``source``: a ``WeightSource`` or an HF directory of safetensors; ``config``: its transformers config when
        already read; ``attention``: HF's attention implementation (``eager`` computes the pattern a hook can read;
        by default HF's choice for the family, as ``from_pretrained`` makes it)."""
        from transformers import AutoModelForCausalLM

        self.source = source if isinstance(source, WeightSource) else WeightSource("safetensors", Path(source))
        self.config = config if config is not None else self.source.config()
        self.dtype, self.device = dtype, torch.device(device)
        with torch.device("meta"):
            self.model = AutoModelForCausalLM.from_config(self.config, dtype=dtype, attn_implementation=attention)
        self.model.eval()  # from_config builds for training: dropout on where the config has any
        architecture = type(self.model).__name__  # a GGUF's config names none
        if architecture not in STREAMABLE:
            raise UsageError(f"{architecture} cannot be streamed yet: expected one of {', '.join(sorted(STREAMABLE))}")
        self.weights = self.source.weights(self.model)
        self.base = self.model.get_decoder()
        self.layers: Sequence[torch.nn.Module] = list(self.base.layers)
        with torch.device(self.device):  # its buffers computed on the run's device, not on meta
            self.base.rotary_emb = type(self.base.rotary_emb)(config=self.config)
        kept: dict = {}
        self.base.layers = torch.nn.ModuleList([_StandIn(layer, i, len(self.layers), kept)
                                                for i, layer in enumerate(self.layers)])

    def _load(self, module: torch.nn.Module, prefix: str) -> None:
        """``module``'s parameters from the files, then what the files do not hold (buffers such as Gemma's embedding
        scale) from HF's own initialisation, which skips what is marked loaded, as ``from_pretrained`` does."""
        loaded = self.weights.load(module, prefix, self.dtype, self.device)
        tensors = dict(module.named_parameters()) | dict(module.named_buffers())
        for name in loaded:
            tensors[name]._is_hf_initialized = True
        for owner in module.modules():
            if next(owner.buffers(recurse=False), None) is not None:
                self.model._init_weights(owner)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def embed(self, batches: Sequence[torch.Tensor], streams: ResidualStreams, resumed: bool = False
              ) -> list[list[dict]]:
        """Fill ``streams`` with the first block's input per batch; return every block's arguments per batch
        (``arguments[batch][block]``). A resumed pass' streams are there already: only the arguments are captured,
        from them, and the embeddings are never read."""
        if resumed:
            self.base.embed_tokens = torch.nn.Embedding(1 << 20, 1, device="meta")  # the forward must not need it
        else:
            self._load(self.base.embed_tokens, "model.embed_tokens.")
        arguments = []
        with torch.inference_mode():
            for j, tokens in enumerate(batches):
                try:
                    self.base(input_ids=None if resumed else tokens, inputs_embeds=streams[j] if resumed else None,
                              use_cache=False)
                except _Captured as captured:
                    arguments.append(captured.kwargs)
                    if not resumed:
                        streams[j] = captured.hidden
        self.base.embed_tokens.to("meta")
        if not resumed:
            streams.commit()
        return arguments

    def rehearse(self) -> None:
        """HF's forward up to the first block on a two-token input, then that block with its weights on ``meta`` (nothing
        allocated but the input): the modules a first forward imports (and, in a fresh environment, compiles: 16 MiB
        measured) are loaded here, before a measured pass, whose peak is then its own."""
        embeds = torch.zeros((1, 2, self.config.hidden_size), dtype=self.dtype, device=self.device)
        meta = lambda value: value.to("meta") if isinstance(value, torch.Tensor) else \
            tuple(map(meta, value)) if isinstance(value, tuple) else value  # noqa: E731
        with torch.inference_mode():
            try:
                self.base(inputs_embeds=embeds, use_cache=False)
            except _Captured as captured:
                self.layers[0](meta(captured.hidden), **{k: meta(v) for k, v in captured.kwargs[0].items()})

    @contextlib.contextmanager
    def block(self, i: int) -> Iterator[torch.nn.Module]:
        layer = self.layers[i]
        self._load(layer, f"model.layers.{i}.")
        try:
            yield layer
        finally:
            layer.to("meta")

    @contextlib.contextmanager
    def head(self) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
        """``logits(hidden)``: the final norm and the LM head over a block's output."""
        norm, lm_head = self.base.norm, self.model.lm_head
        tied = getattr(self.config, "tie_word_embeddings", False)
        self._load(norm, "model.norm.")
        self._load(lm_head, "model.embed_tokens." if tied else "lm_head.")
        try:
            yield lambda hidden: lm_head(norm(hidden))
        finally:
            norm.to("meta")
            lm_head.to("meta")


def return_freed_blocks() -> None:
    """glibc's malloc raises its mmap threshold to the size of each large block freed, so the next block's tensors
    come from the heap, whose freed pages stay with the process: measured, 5.6 blocks resident where the plan holds
    one. A fixed threshold of 4 MiB serves every larger tensor (a block's matrices) with its own mapping, returned to
    the system when the block is dropped, and keeps smaller ones (a forward's activations) on the heap. It stays set
    for the rest of the process: glibc cannot give back its adaptive threshold."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).mallopt(-3, 4 * 2**20)  # M_MMAP_THRESHOLD; other C libraries lack mallopt or ignore it
    except (OSError, AttributeError):
        return
