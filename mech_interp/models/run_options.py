"""The options every language-model run shares: which model, how it is loaded and tokenized, the criterion.
Imports no torch. Device and dtype are checked here, at the edge, and nowhere after."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..validation.checks import require_criterion, require_seed, require_type
from ..validation.device_names import check_device, check_dtype
from .engines import check_engine_name
from .placement.memory_units import parse_bytes
from .placement.run_placement import check_placement_name
from .registry import DEFAULT_MODEL


@dataclass
class RunOptions:
    """Options shared by every experiment: which model, how it is loaded and tokenized."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "registered name, local HF directory, .gguf file or hub name"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    dtype: str = field(default="float32", metadata={"help": "float32, float16 or bfloat16"})
    prepend_bos: bool = field(default=False, metadata={"help": "prepend the BOS token (default: tokenize as the paper, no special tokens)"})
    min_abs: float = field(default=100.0, metadata={"help": "massive: |a| above this"})
    min_ratio: float = field(default=1000.0, metadata={"help": "massive: |a| at least this many times the median |a| of its hidden state"})
    seed: int = field(default=0, metadata={"help": "torch seed set before each run, 0..2**63-1 (the built-in experiments draw no random numbers)"})
    fast_paths: bool = field(default=True, metadata={"help": "fused attention and HF weight layout where tested (same values; --no-fast-paths for TransformerLens' own path)"})
    engine: str = field(default="auto", metadata={"help": "auto (the installed TransformerLens: 3.x hooked_transformer, 4.x transformer_bridge), hooked_transformer or transformer_bridge"})
    placement: str = field(default="auto", metadata={"help": "auto (the first of whole, streamed, spilled whose planned peak fits --max-memory or the device's free memory), whole, streamed (one block's weights at a time: every experiment but attention, head-sweep and attribution; 22 dense decoder families (Llama, Mistral, Qwen, Gemma, Phi, OLMo, ...) from safetensors or a GGUF) or spilled (streamed, with the residual streams on disk between blocks)"})
    max_memory: str | None = field(default=None, metadata={"help": "memory the run may use, e.g. 20GiB or 512MB (default: the device's free memory); with --device-map, the cap of each device"})
    device_map: str | None = field(default=None, metadata={"help": "split the model over devices: auto, balanced, balanced_low_0, sequential (transformer_bridge engine) or a JSON file of module -> device; hooked_transformer splits blocks evenly (auto, balanced)"})

    def __post_init__(self) -> None:
        for name in ("model", "device", "dtype", "engine"):
            require_type(self, name, str, "a string")
        for name in ("prepend_bos", "fast_paths"):
            require_type(self, name, bool, "true or false")
        check_engine_name(self.engine)
        require_type(self, "placement", str, "a string")
        if self.device_map is not None:
            require_type(self, "device_map", str, "a device map name or file")
        check_placement_name(self.placement)
        if self.max_memory is not None:
            parse_bytes(self.max_memory)
        check_device(self.device)
        check_dtype(self.dtype)
        require_seed(self)
        require_criterion(self)

    @property
    def criterion(self):
        from ..core.criterion import MassiveCriterion

        return MassiveCriterion(float(self.min_abs), float(self.min_ratio))
