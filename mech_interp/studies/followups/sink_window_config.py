"""The ``sink-window`` experiment's parameters. Imports no torch.

Field names are the CLI flags and batch-file keys; ``__post_init__`` refuses bad values in one line before any model
loads. The defaults keep a run of SmolLM2-135M to about two minutes on 2 busy CPU cores: every condition is one forward
per sequence on the explicit attention path (the fused kernel never forms the scores the mask acts on), 17 of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.reset_kinds import RESETS
from ...validation.checks import MAX_COUNT, require_at_least, require_type
from ...validation.errors import UsageError

POSITIONS = ("text", "cache")
TEXTS_ACCEPTED = "builtin, wikitext2, c4, pg19, hf:NAME[:CONFIG[:SPLIT]] or a text file"


def _counts(config, name: str, minimum: int, meaning: str) -> None:
    """A non-empty list of distinct integers >= ``minimum`` (the command line gives strings of digits)."""
    flag, values = f"--{name.replace('_', '-')}", getattr(config, name)
    accepted = f"integers >= {minimum} ({meaning}), comma-separated"
    if not isinstance(values, list) or not values:
        raise UsageError(f"{flag} {values!r} is not allowed: expected {accepted}")
    counts = []
    for value in values:
        text = value.strip() if isinstance(value, str) else None
        if text is not None and text.isascii() and text.isdigit():
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_COUNT:
            raise UsageError(f"{flag} {value!r} is not allowed: expected {accepted}")
        if value in counts:
            raise UsageError(f"{flag} names {value} twice: give each once")
        counts.append(value)
    setattr(config, name, sorted(counts))


def _text(config, name: str) -> None:
    require_type(config, name, str, f"one of {TEXTS_ACCEPTED}")
    if not getattr(config, name).strip():
        raise UsageError(f"--{name.replace('_', '-')} '' is not allowed: expected {TEXTS_ACCEPTED}")


@dataclass
class SinkWindowConfig:
    text: str = field(default="wikitext2", metadata={"help": f"the text whose perplexity is measured: {TEXTS_ACCEPTED}"})
    n_seqs: int = field(default=1, metadata={"help": "sequences (consecutive windows of --text; fewer if it is shorter)"})
    seq_len: int = field(default=512, metadata={"help": "tokens per sequence: at most the model's context, at least the largest --windows + 2"})
    windows: list[int] = field(default_factory=lambda: [32, 128], metadata={"help": "W: keys each query keeps, itself included (the last W tokens)"})
    sinks: list[int] = field(default_factory=lambda: [1, 4], metadata={"help": "S: first tokens of the sequence kept besides the window, each at most every W"})
    resets: list[str] = field(default_factory=lambda: list(RESETS), metadata={"help": "the sinks' massive entries, under window W + S sinks, set to: set_zero, set_mean"})
    layer: int | None = field(default=None, metadata={"help": "0-based block whose resid_post gives the massive tokens and is reset (default: the first block with massive activations on --mean-text)"})
    mean_text: str = field(default="builtin", metadata={"help": "text whose sequences give the first massive block and the set_mean values"})
    n_mean_seqs: int = field(default=2, metadata={"help": "sequences of --mean-text (fewer if it is shorter)"})
    batch_size: int = field(default=1, metadata={"help": "sequences per forward"})
    positions: str = field(default="text", metadata={"help": "text: every token at its position in the text; cache: "
                                                            "StreamingLLM's positions within its cache, the kept keys "
                                                            "outside the window first (rotary models, "
                                                            "HookedTransformer engine)"})

    def __post_init__(self) -> None:
        _text(self, "text")
        _text(self, "mean_text")
        if self.positions not in POSITIONS:
            raise UsageError(f"--positions {self.positions!r} is not allowed: expected one of {', '.join(POSITIONS)}")
        require_at_least(self, 1, "n_seqs", "n_mean_seqs", "batch_size")
        require_at_least(self, 3, "seq_len")
        if self.layer is not None:
            require_type(self, "layer", int, "a 0-based block index (an integer >= 0)")
            if self.layer < 0:
                raise UsageError(f"layer {self.layer} out of range: expected a 0-based block index >= 0")
        _counts(self, "windows", 1, "tokens each query keeps, itself included")
        _counts(self, "sinks", 1, "first tokens kept; the window alone is measured anyway")
        if isinstance(self.resets, str) or not isinstance(self.resets, list) or not self.resets:
            raise UsageError(f"--resets {self.resets!r} is not allowed: expected one or more of {', '.join(RESETS)}, "
                             "comma-separated")
        self.resets = [r.strip() if isinstance(r, str) else r for r in self.resets]
        for reset in self.resets:
            if reset not in RESETS:
                raise UsageError(f"unknown reset type {reset!r}: expected one of {', '.join(RESETS)}")
            if self.resets.count(reset) > 1:
                raise UsageError(f"--resets names {reset!r} twice: give each once")
        widest, narrowest = self.windows[-1], self.windows[0]
        if widest > self.seq_len - 2:
            raise UsageError(f"--windows {widest} is too large for --seq-len {self.seq_len}: every W must be at most "
                             f"seq_len - 2 = {self.seq_len - 2}, so that some query has tokens beyond its window")
        if self.sinks[-1] > narrowest:
            raise UsageError(f"--sinks {self.sinks[-1]} is larger than --windows {narrowest}: give sinks no larger "
                             "than the smallest window")
