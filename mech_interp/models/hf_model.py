"""A Hugging Face causal LM with its tokenizer and a record of where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class HFModel:
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    source: str  # what was loaded, for the manifest
