"""The language-model experiments' parameters: one dataclass per experiment. Imports no torch.

Field names are the CLI flags (``--seq-len``) and the keys of batch config files; ``help`` is
their flag help. ``__post_init__`` refuses bad values before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.reset_kinds import MEAN_MODES, RESETS
from ...validation.checks import require_at_least, require_type
from ...validation.errors import UsageError

FEATURE_VIEW_PROMPT = "Summer is warm. Winter is cold."
ATTENTION_PROMPT = (
    "The following are multiple choice questions (with answers) about machine learning.\n\n"
    " A 6-sided die is rolled 15 times and the results are: side 1 comes up 0 times;"
)
SINK_EPS = 0.3  # Gu et al. 2024: a head is a sink head if its mean attention to token 0 exceeds this


def _check_layer(config) -> None:
    # Negative indices are refused rather than counted from the end: the run directory, the manifest
    # and every table name the block the user typed, so it must be the block that runs.
    if config.layer is not None:
        require_type(config, "layer", int, "a 0-based block index (an integer >= 0)")
        if config.layer < 0:
            raise UsageError(f"layer {config.layer} out of range: expected a 0-based block index >= 0")


def _check_prompt(config) -> None:
    require_type(config, "prompt", str, "a text")
    if not config.prompt.strip():
        raise UsageError("empty prompt: give some text to tokenize")


def _check_names(config, name: str, accepted: str) -> None:
    """A non-empty list of distinct non-empty strings (comma-separated on the command line)."""
    values = getattr(config, name)
    flag = f"--{name.replace('_', '-')}"
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise UsageError(f"{flag} {values!r} is not allowed: expected {accepted}, comma-separated")
    values = [v.strip() for v in values]
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise UsageError(f"{flag} names {repeated[0]!r} twice: give each once")
    setattr(config, name, values)


@dataclass
class FeatureViewConfig:
    prompt: str = field(default=FEATURE_VIEW_PROMPT, metadata={"help": "text to run"})
    layer: int | None = field(default=None, metadata={"help": "0-based block whose resid_post is shown (default: first layer with massive activations)"})

    def __post_init__(self) -> None:
        _check_prompt(self)
        _check_layer(self)


@dataclass
class LayerwiseConfig:
    text: str = field(default="builtin", metadata={"help": "builtin, wikitext2, c4, pg19, hf:NAME[:CONFIG[:SPLIT]] or a text file"})
    n_seqs: int = field(default=10, metadata={"help": "number of sequences (consecutive windows of the text)"})
    seq_len: int = field(default=512, metadata={"help": "tokens per sequence"})
    k: int = field(default=3, metadata={"help": "top-k largest |a| per sequence"})
    hooks: list[str] | None = field(default=None, metadata={"help": "hook points, comma-separated (default: every blocks.L.hook_resid_post)"})
    batch_size: int = field(default=1, metadata={"help": "sequences per forward"})
    log_y: bool = field(default=True, metadata={"help": "log-scale y axis in the plot"})

    def __post_init__(self) -> None:
        require_type(self, "text", str, "a text name or file")
        if not self.text.strip():
            raise UsageError("--text '' is not allowed: expected builtin, wikitext2, c4, pg19, hf:NAME or a text file")
        require_at_least(self, 1, "n_seqs", "k", "batch_size")
        require_at_least(self, 2, "seq_len")
        require_type(self, "log_y", bool, "true or false")
        if self.hooks is not None:
            _check_names(self, "hooks", "one or more hook point names such as blocks.0.hook_resid_post")


@dataclass
class InterventionConfig:
    layer: int | None = field(default=None, metadata={"help": "0-based block whose resid_post is overwritten (default: first layer with massive activations)"})
    resets: list[str] = field(default_factory=lambda: list(RESETS), metadata={"help": "comma-separated: set_zero, set_mean"})
    mean_mode: str = field(default="detected", metadata={"help": "set_mean writes: detected (the entries detected in each sequence, per-dim means) or fixed_sites (given dims at the first and the top-1 position, as the paper's hook)"})
    datasets: list[str] = field(default_factory=lambda: ["wikitext2", "c4", "pg19"], metadata={"help": "perplexity texts, comma-separated (names as for --text)"})
    seq_len: int = field(default=512, metadata={"help": "tokens per perplexity window"})
    n_windows: int | None = field(default=32, metadata={"help": "windows per dataset (0 = all)"})
    mean_text: str = field(default="builtin", metadata={"help": "text whose sequences give the set_mean values"})
    n_mean_seqs: int = field(default=100, metadata={"help": "sequences for the means (fewer if the text is shorter)"})
    batch_size: int = field(default=1, metadata={"help": "windows per forward"})

    def __post_init__(self) -> None:
        _check_layer(self)
        if isinstance(self.resets, str):
            raise UsageError(f"--resets {self.resets!r} is not allowed: expected a list of {', '.join(RESETS)}")
        _check_names(self, "resets", f"one or more of {', '.join(RESETS)}")
        for reset in self.resets:
            if reset not in RESETS:
                raise UsageError(f"unknown reset type {reset!r}: expected one of {', '.join(RESETS)}")
        if self.mean_mode not in MEAN_MODES:
            raise UsageError(f"unknown --mean-mode {self.mean_mode!r}: expected one of {', '.join(MEAN_MODES)}")
        _check_names(self, "datasets", "one or more text names or files")
        require_type(self, "mean_text", str, "a text name or file")
        require_at_least(self, 0, "n_windows")
        require_at_least(self, 1, "n_mean_seqs", "batch_size")
        require_at_least(self, 2, "seq_len")


@dataclass
class AttentionConfig:
    prompt: str = field(default=ATTENTION_PROMPT, metadata={"help": "text to run"})
    layer: int | None = field(default=None, metadata={"help": "0-based block for the logits heatmap (default: the block after massive activations first appear)"})
    sink_eps: float = field(default=SINK_EPS, metadata={"help": "a head is a sink head when its score for the first token exceeds this (Gu et al. 2024: 0.3)"})

    def __post_init__(self) -> None:
        _check_prompt(self)
        _check_layer(self)
        require_type(self, "sink_eps", (int, float), "a number in [0, 1)")
        if not 0 <= self.sink_eps < 1:
            raise UsageError(f"--sink-eps {self.sink_eps} is not allowed: expected a number in [0, 1)")
