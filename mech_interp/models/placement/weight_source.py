"""Where a streamed pass reads a model from: its config, its tokenizer and its weights, one block at a time.

An HF directory's safetensors files, or a GGUF file (a registered model names its file with ``ModelEntry.weights``).
A GGUF's config and tokenizer take transformers ~15 s to parse from its header (the vocabulary); they are cached
beside the whole-model conversion (``$MECH_INTERP_CACHE/gguf``), without the weights, so later runs start at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...validation.errors import UsageError, reason
from ..spec import ModelSpec

# Families whose every block's output a streamed pass reproduces bit for bit (tests/test_streamed_pass.py, one tiny
# model of each with its own features on: sliding windows, soft-capping, q/k norms, scaled embeddings, no-rope layers):
# decoder-only models stored as model.embed_tokens / model.layers.N / model.norm / lm_head. Not yet: mixture-of-experts
# families, whose stored expert tensors transformers converts at load time.
STREAMABLE = frozenset({
    "ApertusForCausalLM", "CohereForCausalLM", "Exaone4ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
    "GemmaForCausalLM", "GlmForCausalLM", "GraniteForCausalLM", "HunYuanDenseV1ForCausalLM", "LlamaForCausalLM",
    "MistralForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoForCausalLM", "Phi3ForCausalLM",
    "PhiForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "SeedOssForCausalLM", "SmolLM3ForCausalLM",
    "StableLmForCausalLM", "Starcoder2ForCausalLM",
})


@dataclass(frozen=True)
class WeightSource:
    kind: str  # "safetensors" | "gguf"
    path: Path  # the HF directory, or the GGUF file

    @classmethod
    def of(cls, spec: ModelSpec) -> "WeightSource":
        """The files a streamed pass reads ``spec`` from; one-line refusal for models without such files."""
        if spec.kind == "registered":
            from ..registry import model_entry

            entry = model_entry(spec.text)
            if entry.weights is None:
                raise UsageError(f"registered model {spec.text!r} is built in code, with no weight files to stream: "
                                 "save it with save_pretrained and pass the directory, or use --placement whole")
            path = entry.weights()
            return cls("gguf" if path.suffix.lower() == ".gguf" else "safetensors", path)
        if spec.kind == "gguf":
            return cls("gguf", spec.path)
        if spec.kind == "hf_dir":
            if not any(spec.path.glob("*.safetensors")):
                raise UsageError(f"model directory {spec.text!r} holds no .safetensors file: a streamed pass reads "
                                 "safetensors or GGUF (save the model with save_pretrained), or use --placement whole")
            return cls("safetensors", spec.path)
        what = "a trained checkpoint" if spec.kind == "checkpoint" else "a hub name"
        raise UsageError(f"{spec.text!r} is {what}: a streamed pass reads a local HF directory (safetensors) or a "
                         "GGUF file; pass one, or use --placement whole")

    def config(self) -> Any:
        """The model's transformers config (with its tokenizer for a GGUF, which is parsed with it)."""
        if self.kind == "gguf":
            return self._gguf_parts()[0]
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.path, trust_remote_code=False)
        except (ValueError, OSError, KeyError) as err:
            raise UsageError(f"cannot read the config of {str(self.path)!r} ({reason(err, 160)})") from None

    def parts(self) -> tuple[Any, Any]:
        """The model's transformers config and tokenizer, without its weights."""
        from transformers import AutoConfig, AutoTokenizer

        if self.kind == "gguf":
            return self._gguf_parts()
        try:
            return (AutoConfig.from_pretrained(self.path, trust_remote_code=False),
                    AutoTokenizer.from_pretrained(self.path, trust_remote_code=False))
        except (ValueError, OSError, KeyError) as err:
            raise UsageError(f"cannot read the config or tokenizer of {str(self.path)!r} ({reason(err, 160)})") \
                from None

    def weights(self, model) -> Any:
        """The reader of this source's tensors into ``model`` (built on ``meta``)."""
        if self.kind == "safetensors":
            from .safetensors_weights import SafetensorsWeights

            return SafetensorsWeights(self.path)
        from ..gguf import read_header
        from .gguf_weights import GGUFWeights

        return GGUFWeights(self.path, read_header(self.path).architecture, model)

    def _gguf_parts(self) -> tuple[Any, Any]:
        """The GGUF's config and tokenizer: from the cache, or parsed from the file and cached (without weights)."""
        from transformers import AutoConfig, AutoTokenizer

        from ...storage.atomic_files import remove_stale
        from ...storage.cache_root import cached_conversion
        from ..gguf import save_atomically

        cached = cached_conversion(self.path, "gguf", "-config")
        if cached is not None:
            remove_stale(cached)
            if (cached / "config.json").is_file():
                try:
                    return (AutoConfig.from_pretrained(cached, trust_remote_code=False),
                            AutoTokenizer.from_pretrained(cached, trust_remote_code=False))
                except (ValueError, OSError, KeyError) as err:  # damaged: parsed again below, and replaced
                    import shutil
                    import warnings

                    warnings.warn(f"the cached config {cached} was damaged ({reason(err, 120)}); reading "
                                  f"{self.path} again", stacklevel=2)
                    shutil.rmtree(cached, ignore_errors=True)
        try:
            config = AutoConfig.from_pretrained(self.path.parent, gguf_file=self.path.name, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name,
                                                      trust_remote_code=False)
        except (ValueError, OSError, KeyError, RuntimeError) as err:
            raise UsageError(f"cannot read GGUF file {str(self.path)!r} ({reason(err, 160)}): download it again") \
                from None
        if hasattr(config, "quantization_config"):  # the blocks are dequantized as they load
            del config.quantization_config
        if cached is not None:
            save_atomically(cached, config, tokenizer)
        return config, tokenizer
