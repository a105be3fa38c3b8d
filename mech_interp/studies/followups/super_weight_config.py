"""The ``super-weights`` experiment's parameters. Imports no torch.

Field names are the CLI flags and batch-file keys; ``__post_init__`` refuses bad values in one line before any model
loads. The defaults keep a run to about a minute on 2 CPU cores for SmolLM2-135M: the scan is one forward of the
prompt and the windows, and each candidate one more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...validation.checks import require_at_least, require_type
from ...validation.errors import UsageError

YU_PROMPT = "Apple Inc. is a worldwide tech company."  # the prompt Yu et al. (2024) scan their models with
SCALES_ACCEPTED = "numbers other than 0 and 1, comma-separated"


def _factor(value) -> float:
    """One ``--scales`` entry as a float: a number, or a string of one (the command line gives strings)."""
    if isinstance(value, bool):
        raise UsageError(f"--scales {value!r} is not allowed: expected {SCALES_ACCEPTED}")
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--scales {value!r} is not allowed: expected {SCALES_ACCEPTED}") from None
    if not math.isfinite(factor):
        raise UsageError(f"--scales {value!r} is not allowed: expected finite {SCALES_ACCEPTED}")
    if factor == 0:
        raise UsageError("--scales 0 is the zeroed weight, measured for every candidate anyway: give other factors")
    if factor == 1:
        raise UsageError("--scales 1 leaves the weight as it is: give other factors")
    return factor


@dataclass
class SuperWeightsConfig:
    prompt: str = field(default=YU_PROMPT, metadata={"help": "the text scanned: one forward, every block's MLP down-projection input and output spikes (Yu et al.'s prompt)"})
    text: str = field(default="builtin", metadata={"help": "perplexity text: builtin, wikitext2, c4, pg19, hf:NAME[:CONFIG[:SPLIT]] or a text file"})
    n_seqs: int = field(default=4, metadata={"help": "windows of --text the perplexity and the layer-wise massive entries are measured on"})
    seq_len: int = field(default=64, metadata={"help": "tokens per window"})
    top_k: int = field(default=3, metadata={"help": "candidates (one per block, ranked by what the weight writes to its block's output spike) edited, one forward each"})
    scales: list[float] = field(default_factory=lambda: [0.5, 2.0], metadata={"help": "factors each candidate is also multiplied by, besides 0 (zeroed) and 0 with its spike restored"})

    def __post_init__(self) -> None:
        require_type(self, "prompt", str, "a text")
        if not self.prompt.strip():
            raise UsageError("empty prompt: give some text to tokenize")
        require_type(self, "text", str, "a text name or file")
        if not self.text.strip():
            raise UsageError("--text '' is not allowed: expected builtin, wikitext2, c4, pg19, hf:NAME or a text file")
        require_at_least(self, 1, "n_seqs", "top_k")
        require_at_least(self, 2, "seq_len")
        if not isinstance(self.scales, list):
            raise UsageError(f"--scales {self.scales!r} is not allowed: expected a list of {SCALES_ACCEPTED}")
        self.scales = [_factor(value) for value in self.scales]
        repeated = sorted({s for s in self.scales if self.scales.count(s) > 1})
        if repeated:
            raise UsageError(f"--scales names {repeated[0]:g} twice: give each factor once")
