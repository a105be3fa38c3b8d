"""The ``emergence`` experiment's parameters. Imports no torch.

The experiment measures a series of checkpoints of one model, so the checkpoints are its parameters, not a run's
``--model`` (it takes none): ``--series DIR`` (a trainer's output, its ``series/step_<N>/`` directories) or
``--models A,B,...``; so are the loading options a ``--model`` would carry (device, dtype, BOS, the massive
criterion). Field names are the CLI flags and batch-file keys; ``__post_init__`` refuses bad values in one line before
anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...validation.checks import require_at_least, require_criterion, require_type
from ...validation.device_names import check_device, check_dtype
from ...validation.errors import UsageError

SINK_EPS = 0.3  # Gu et al. 2024: a head is a sink head when its mean attention to token 0 exceeds this
MAX_DEFAULT_SEQ_LEN = 512  # --seq-len 0: the checkpoints' context, at most this (the layerwise experiment's default)
EMPTY_SERIES = ("empty checkpoint series: give --series DIR (a train-gpt2-bias --out) or --models A,B,... (or "
                "neither, for the default series)")


@dataclass
class EmergenceConfig:
    series: str = field(default="", metadata={"help": "a train-gpt2-bias --out: its checkpoints <DIR>/series/step_<N>/ "
                                                      "(trained with --series-interval N), by step; with neither "
                                                      "--series nor --models, the default series: the trainer's cpu "
                                                      "preset every 10 steps in results/train/cpu-series/default, "
                                                      "trained on first use (minutes)"})
    models: list[str] | None = field(default=None, metadata={
        "help": "the checkpoints in training order instead of --series: registered names, local checkpoint or HF "
                "directories (one named step_<N> gives the step), .gguf files, or a hub model's revisions "
                "NAME@step1000,step2000 (Pythia-style; needs the hub)"})
    text: str = field(default="builtin", metadata={"help": "builtin, wikitext2, c4, pg19, hf:NAME[:CONFIG[:SPLIT]] or "
                                                           "a text file"})
    n_seqs: int = field(default=10, metadata={"help": "sequences (consecutive windows of the text) per checkpoint"})
    seq_len: int = field(default=0, metadata={"help": "tokens per sequence (0 = the checkpoints' context, at most "
                                                      f"{MAX_DEFAULT_SEQ_LEN})"})
    batch_size: int = field(default=1, metadata={"help": "sequences per forward"})
    sink_eps: float = field(default=SINK_EPS, metadata={
        "help": "a head is a sink head when its mean attention to token 0 exceeds this (Gu et al. 2024: 0.3)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    dtype: str = field(default="float32", metadata={"help": "float32, float16 or bfloat16"})
    prepend_bos: bool = field(default=False, metadata={"help": "prepend the BOS token (default: tokenize as the "
                                                               "paper, no special tokens)"})
    min_abs: float = field(default=100.0, metadata={"help": "massive: |a| above this"})
    min_ratio: float = field(default=1000.0, metadata={"help": "massive: |a| at least this many times the median |a| "
                                                               "of its hidden state"})

    def __post_init__(self) -> None:
        require_type(self, "series", str, "a directory")
        if isinstance(self.models, str):  # a batch file may give one string
            self.models = self.models.split(",")
        if self.models is not None:
            if not isinstance(self.models, list) or not all(isinstance(m, str) for m in self.models):
                raise UsageError(f"--models {self.models!r} is not allowed: expected model specs, comma-separated")
            self.models = [m.strip() for m in self.models if m.strip()]
        if self.series.strip() and self.models is not None:
            raise UsageError("--series and --models both name the checkpoints: give one")
        if self.models == []:
            raise UsageError(EMPTY_SERIES)
        for name in ("device", "dtype"):
            require_type(self, name, str, "a string")
        require_type(self, "prepend_bos", bool, "true or false")
        check_device(self.device)
        check_dtype(self.dtype)
        require_criterion(self)
        require_type(self, "text", str, "a text name or file")
        if not self.text.strip():
            raise UsageError("--text '' is not allowed: expected builtin, wikitext2, c4, pg19, hf:NAME or a text file")
        require_at_least(self, 1, "n_seqs", "batch_size")
        require_at_least(self, 0, "seq_len")
        if self.seq_len == 1:
            raise UsageError("--seq-len 1 is too short: the attention scores need a query after token 0")
        require_type(self, "sink_eps", (int, float), "a number in [0, 1)")
        if not 0 <= self.sink_eps < 1:  # NaN fails too
            raise UsageError(f"--sink-eps {self.sink_eps} is not allowed: expected a number in [0, 1)")

    @property
    def uses_default_series(self) -> bool:
        """Neither ``--series`` nor ``--models``: the default series (``default_series``)."""
        return not self.series.strip() and self.models is None

    @property
    def criterion(self):
        from ...core.criterion import MassiveCriterion

        return MassiveCriterion(float(self.min_abs), float(self.min_ratio))
