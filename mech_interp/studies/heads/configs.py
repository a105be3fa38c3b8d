"""The head study's parameters: one dataclass per experiment. Imports no torch.

Field names are the CLI flags and batch-file keys; ``__post_init__`` refuses bad values before any
model loads. Layers are 0-based TransformerLens blocks; heads are written ``L5H1`` (block 5, head 1;
0-based; the older ``5.1`` is read the same).
The defaults keep every experiment to seconds-to-a-minute on 2 CPU cores for SmolLM2-135M: few, short
sequences (``--n-seqs``, ``--seq-len`` raise them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...validation.checks import require_at_least, require_type
from ...validation.errors import UsageError

FEATURE_VIEW_PROMPT = "Summer is warm. Winter is cold."  # the feature view's prompt, tokenized the same way
SINK_EPS = 0.3  # Gu et al. 2024
HOW = ("zero", "mean")
HOW_3D = (*HOW, "residual_slice")
RANK_BY = ("massive", "first")
DEFAULT_MAX_HEADS = 8  # head-cumulative's K when --max-heads is not given


def _check_text(config) -> None:
    require_type(config, "text", str, "a text name or file")
    if not config.text.strip():
        raise UsageError("--text '' is not allowed: expected builtin, wikitext2, c4, pg19, hf:NAME or a text file")


def _check_prompt(config) -> None:
    require_type(config, "prompt", str, "a text")
    if not config.prompt.strip():
        raise UsageError("empty prompt: give some text to tokenize")


def _check_layer(config) -> None:
    if config.layer is not None:
        require_type(config, "layer", int, "a 0-based block index (an integer >= 0)")
        if config.layer < 0:
            raise UsageError(f"layer {config.layer} out of range: expected a 0-based block index >= 0")


def _check_choice(config, name: str, accepted: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in accepted:
        raise UsageError(f"unknown --{name.replace('_', '-')} {value!r}: expected one of {', '.join(accepted)}")


def _check_eps(config) -> None:
    require_type(config, "sink_eps", (int, float), "a number in [0, 1)")
    if not 0 <= config.sink_eps < 1:
        raise UsageError(f"--sink-eps {config.sink_eps} is not allowed: expected a number in [0, 1)")


def _check_heads(config) -> None:
    if config.heads is not None:
        from ...core.head_names import head_name
        from .named_heads import parse_head_list

        config.heads = [head_name(layer, head) for layer, head in parse_head_list(config.heads)]


@dataclass
class _Sequences:
    text: str = field(default="builtin", metadata={"help": "builtin, wikitext2, c4, pg19, hf:NAME[:CONFIG[:SPLIT]] or a text file"})
    n_seqs: int = field(default=4, metadata={"help": "sequences (consecutive windows of the text) the numbers average over"})
    seq_len: int = field(default=64, metadata={"help": "tokens per sequence"})

    def _check_sequences(self) -> None:
        _check_text(self)
        require_at_least(self, 1, "n_seqs")
        require_at_least(self, 2, "seq_len")


@dataclass
class HeadScoresConfig(_Sequences):
    k: int = field(default=3, metadata={"help": "size of the saved top-k / bottom-k / random-k head sets"})
    n_random: int = field(default=3, metadata={"help": "random-k sets drawn (seeded by --seed)"})
    rank_by: str = field(default="massive", metadata={"help": "massive (attention to the detected massive tokens) or first (to token 0)"})
    sink_eps: float = field(default=SINK_EPS, metadata={"help": "a head is a sink head when its token-0 score exceeds this (Gu et al. 2024: 0.3)"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the confidence intervals"})
    batch_size: int = field(default=4, metadata={"help": "sequences per forward"})

    def __post_init__(self) -> None:
        self._check_sequences()
        require_at_least(self, 1, "k", "n_random", "n_boot", "batch_size")
        _check_choice(self, "rank_by", RANK_BY)
        _check_eps(self)


@dataclass
class HeadAblationConfig(_Sequences):
    k: int = field(default=3, metadata={"help": "heads per set: top-k, bottom-k, random-k by score"})
    n_random: int = field(default=3, metadata={"help": "random-k sets drawn (seeded by --seed)"})
    rank_by: str = field(default="massive", metadata={"help": "massive or first: the score that ranks the heads"})
    how: str = field(default="zero", metadata={"help": "zero or mean (hook_z replaced by its mean over held-out sequences of --text)"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the confidence intervals"})
    head_sets: str | None = field(default=None, metadata={"help": "head_sets.csv of a head-scores run to ablate instead of scoring here (--k, --n-random, --rank-by then unused)"})
    batch_size: int = field(default=4, metadata={"help": "sequences per forward of the scores and of a streamed run"})

    def __post_init__(self) -> None:
        self._check_sequences()
        require_at_least(self, 1, "k", "n_random", "n_boot", "batch_size")
        _check_choice(self, "rank_by", RANK_BY)
        _check_choice(self, "how", HOW)
        if self.head_sets is not None:
            from .head_sets_file import read_head_set_rows

            require_type(self, "head_sets", str, "the path of a head_sets.csv written by head-scores")
            read_head_set_rows(self.head_sets)  # every cell, before any model loads

    @property
    def streamed_windows(self) -> int:
        """Windows whose residual streams a streamed run holds at once: the clean ones and a copy per ablation (each
        head set, and the top set's residual-slice contrast)."""
        if self.head_sets is None:
            n_ablations = 2 + self.n_random + 1
        else:
            from .head_sets_file import read_head_set_rows

            rows = read_head_set_rows(self.head_sets)
            n_ablations = len({(r.set, r.draw) for r in rows}) + any(r.set == "top" for r in rows)
        return self.n_seqs * (1 + n_ablations)


@dataclass
class HeadSweepConfig(_Sequences):
    prompt: str = field(default=FEATURE_VIEW_PROMPT, metadata={"help": "prompt of the per-head table (tokenized as the feature view)"})
    n_seqs: int = field(default=2, metadata={"help": "sequences the second sweep averages over"})
    seq_len: int = field(default=24, metadata={"help": "tokens per sequence (every head costs a forward from its block on)"})
    layer: int | None = field(default=None, metadata={"help": "0-based block whose resid_post massive entries are measured (default: first with massive activations)"})
    how: str = field(default="zero", metadata={"help": "zero or mean"})
    heads_per_forward: int = field(default=0, metadata={"help": "single-head ablations stacked in one forward (0: every head of a block)"})

    def __post_init__(self) -> None:
        self._check_sequences()
        _check_prompt(self)
        _check_layer(self)
        _check_choice(self, "how", HOW)
        require_at_least(self, 0, "heads_per_forward")


@dataclass
class HeadCumulativeConfig(_Sequences):
    max_heads: int | None = field(default=None, metadata={"help": "K: heads removed one more at a time, 1..K (default: 8, or every scored head when fewer)"})
    n_random: int = field(default=1, metadata={"help": "random orders drawn (seeded by --seed)"})
    rank_by: str = field(default="massive", metadata={"help": "massive or first: the score that orders the heads"})
    layer: int | None = field(default=None, metadata={"help": "0-based block whose resid_post is measured (default: last block where the entries are massive)"})
    how: str = field(default="zero", metadata={"help": "zero or mean"})

    def __post_init__(self) -> None:
        self._check_sequences()
        require_at_least(self, 1, "max_heads", "n_random")
        _check_choice(self, "rank_by", RANK_BY)
        _check_layer(self)
        _check_choice(self, "how", HOW)

    @property
    def streamed_windows(self) -> int:
        """Windows whose residual streams a streamed run holds at once: the clean ones and a copy per step of every
        order."""
        return self.n_seqs * (1 + (1 + self.n_random) * (self.max_heads or DEFAULT_MAX_HEADS))


@dataclass
class AttributionConfig(_Sequences):
    prompt: str = field(default=FEATURE_VIEW_PROMPT, metadata={"help": "prompt decomposed entry by entry (tokenized as the feature view)"})
    top_neurons: int = field(default=5, metadata={"help": "neurons of the writing MLP listed, with their top input weights"})
    top_weights: int = field(default=10, metadata={"help": "input weights listed per top neuron"})
    n_random: int = field(default=3, metadata={"help": "random neurons / weights zeroed for the baseline (seeded by --seed)"})

    def __post_init__(self) -> None:
        self._check_sequences()
        _check_prompt(self)
        require_at_least(self, 1, "top_neurons", "top_weights", "n_random")


@dataclass
class HeadBeforeAfterConfig:
    prompt: str = field(default=FEATURE_VIEW_PROMPT, metadata={"help": "text to run"})
    layer: int | None = field(default=None, metadata={"help": "0-based block whose resid_post is shown (default: first with massive activations)"})
    heads: list[str] | None = field(default=None, metadata={"help": "heads as LxHy (e.g. L5H1; 0-based; 5.1 also read), comma-separated (default: the k heads of blocks <= --layer with the highest token-0 score on the prompt)"})
    k: int = field(default=3, metadata={"help": "heads in the default set"})
    how: str = field(default="zero", metadata={"help": "zero, mean (over windows of the built-in text) or residual_slice (the earlier study's contrast)"})

    def __post_init__(self) -> None:
        _check_prompt(self)
        _check_layer(self)
        _check_heads(self)
        require_at_least(self, 1, "k")
        _check_choice(self, "how", HOW_3D)

    @property
    def streamed_windows(self) -> int:
        """The prompt, clean and with the heads removed."""
        return 2
