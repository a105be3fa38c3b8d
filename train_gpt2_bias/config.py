"""The training configuration: one dataclass, filled from a preset, then a TOML/YAML file, then flags.

Every field is a ``train`` flag (``--max-steps 100``) and a key of a config file; the preset supplies the model
shape and the budget (``presets.py``), anything given explicitly wins. Bad values are refused in one line
(``UsageError``) before any data is read or model built.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mech_interp.validation.checks import require_at_least, require_type
from mech_interp.validation.device_names import check_device
from mech_interp.validation.errors import UsageError

from .presets import MODEL_PRESETS, TRAIN_PRESETS
from .variants import VARIANTS

PRECISIONS = ("auto", "float32", "bfloat16")
# The offline English corpus (Debian documentation packages + the WikiText-2 test file in ../shared/data).
DEFAULT_CORPUS = ["debian-docs"]


@dataclass
class TrainConfig:
    preset: str = field(default="cpu", metadata={"help": f"model shape and budget: {', '.join(MODEL_PRESETS)}"})
    variant: str = field(default="default", metadata={"help": f"model variant: {', '.join(VARIANTS)}"})
    out: str = field(default="", metadata={"help": "checkpoint directory (default results/train/<preset>/<variant>); "
                                                   "it is also what --model of mech-interp takes"})
    # data
    corpus: list[str] | None = field(default=None, metadata={
        "help": "text sources (default: the preset's, else debian-docs): debian-docs, wikitext2, a file, a directory (its text files, recursively) or "
                "hf:NAME[:CONFIG[:SPLIT]]"})
    tokenizer: str = field(default="gpt2", metadata={
        "help": "gpt2 (../shared/data/gpt2-tokenizer when present, else the hub), a local tokenizer directory, "
                "or byte (a built-in 257-symbol byte-level tokenizer, for tests)"})
    data_dir: str = field(default="", metadata={"help": "where the token memmaps go (default results/train/data/<hash>)"})
    val_fraction: float = field(default=0.02, metadata={"help": "share of documents held out for the val loss"})
    max_corpus_tokens: int = field(default=0, metadata={"help": "stop tokenizing after this many tokens (0 = all)"})
    # model (None: from the preset)
    n_layers: int | None = field(default=None, metadata={"help": "override the preset's number of blocks"})
    n_heads: int | None = field(default=None, metadata={"help": "override the preset's number of heads"})
    d_model: int | None = field(default=None, metadata={"help": "override the preset's width"})
    n_ctx: int | None = field(default=None, metadata={"help": "override the preset's context (block size)"})
    bias: bool = field(default=False, metadata={"help": "train linear and LayerNorm biases (upstream: no)"})
    # optimisation (upstream's values unless the preset says otherwise)
    batch_size: int | None = field(default=None, metadata={"help": "sequences per micro-batch (per process; default: the preset's)"})
    grad_accum: int | None = field(default=None, metadata={"help": "micro-batches per step (all processes together)"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (upstream 6e-4)"})
    min_lr: float | None = field(default=None, metadata={"help": "learning rate at the end of the cosine decay "
                                                                 "(upstream 6e-5)"})
    warmup_steps: int | None = field(default=None, metadata={"help": "linear warmup steps"})
    lr_decay_steps: int | None = field(default=None, metadata={"help": "step where the cosine reaches min_lr"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on 2-D parameters"})
    decay_slots: bool = field(default=True, metadata={
        "help": "weight-decay the attention-bias k'/v' slots and the sink token (2-D; upstream decays them)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0 = off)"})
    # evaluation, checkpoints, run control
    eval_interval: int | None = field(default=None, metadata={"help": "steps between val-loss evaluations"})
    eval_batches: int | None = field(default=None, metadata={"help": "batches per evaluation"})
    ckpt_interval: int | None = field(default=None, metadata={"help": "steps between checkpoints"})
    series_interval: int = field(default=0, metadata={
        "help": "every N steps and at the last step, export a loadable model to <out>/series/step_<N>/ (for "
                "mech-interp emergence; 0 = off); ckpt.pt stays the only resume state"})
    stop_after: int = field(default=0, metadata={"help": "stop after this step, checkpoint saved, as if killed "
                                                         "(0 = run to max_steps); the same command resumes"})
    resume: bool = field(default=True, metadata={"help": "continue from the checkpoint in --out when its "
                                                        "configuration matches (--no-resume starts over)"})
    seed: int = field(default=0, metadata={"help": "initialisation and batch order"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps (torchrun: one GPU each)"})
    precision: str = field(default="auto", metadata={"help": "auto (bfloat16 autocast on a GPU, else float32), "
                                                             "float32 or bfloat16"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (GPU)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        for name in ("preset", "variant", "out", "tokenizer", "data_dir", "device", "precision"):
            require_type(self, name, str, "a string")
        for name in ("bias", "decay_slots", "resume", "compile", "progress"):
            require_type(self, name, bool, "true or false")
        if self.preset not in MODEL_PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}: expected one of {', '.join(MODEL_PRESETS)}")
        if self.variant not in VARIANTS:
            raise UsageError(f"unknown variant {self.variant!r}: expected one of {', '.join(VARIANTS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        check_device(self.device)
        preset = {**MODEL_PRESETS[self.preset], **TRAIN_PRESETS[self.preset]}
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None and f.name in preset:
                setattr(self, f.name, preset[f.name])
        if self.corpus is None:
            self.corpus = list(DEFAULT_CORPUS)
        if isinstance(self.corpus, str):
            self.corpus = [s.strip() for s in self.corpus.split(",") if s.strip()]
        if not isinstance(self.corpus, list) or not self.corpus or not all(isinstance(s, str) and s for s in self.corpus):
            raise UsageError(f"--corpus {self.corpus!r} is not allowed: expected one or more text sources")
        require_at_least(self, 1, "n_layers", "n_heads", "d_model", "n_ctx", "batch_size", "grad_accum", "max_steps",
                         "eval_interval", "eval_batches", "ckpt_interval")
        require_at_least(self, 0, "warmup_steps", "lr_decay_steps", "stop_after", "max_corpus_tokens", "seed",
                         "series_interval")
        if self.d_model % self.n_heads:
            raise UsageError(f"--d-model {self.d_model} is not a multiple of --n-heads {self.n_heads}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "val_fraction", "beta1", "beta2"):
            require_type(self, name, (int, float), "a number")
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not allowed: expected a "
                                 "finite number >= 0")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"--val-fraction {self.val_fraction} is not allowed: expected a number between 0 and 1")
        if not (self.beta1 < 1 and self.beta2 < 1) or self.lr <= 0:
            raise UsageError(f"--lr must be > 0 and --beta1/--beta2 < 1, got lr={self.lr}, beta1={self.beta1}, "
                             f"beta2={self.beta2}")
        # The schedule (train.learning_rate): warmup to lr, cosine down to min_lr at lr_decay_steps. Any step counts
        # give rates between 0 and lr (a warmup longer than a short smoke run just ends it while warming up).
        if self.min_lr > self.lr:
            raise UsageError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the decay would raise the learning "
                             "rate; expected --min-lr <= --lr")
        if not self.out:
            self.out = str(Path("results") / "train" / self.preset / self.variant)

    @property
    def model_shape(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "d_model": self.d_model, "n_ctx": self.n_ctx,
                "variant": self.variant}

    def identity(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed: everything that changes the numbers (not the run
        control: stop_after, resume, progress, device, out, series_interval: the series is what the run exports, and
        states saved before the field existed must still resume)."""
        skip = {"stop_after", "resume", "progress", "device", "out", "series_interval"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def config_from(file: str | Path | None, values: dict[str, Any]) -> TrainConfig:
    """Defaults < preset < config file < flags (``values``). Unknown keys in the file are refused."""
    merged: dict[str, Any] = {}
    if file is not None:
        from mech_interp.runs.batch import read_config

        data = read_config(file)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"config file {str(file)!r}: unknown key(s) {', '.join(unknown)}: expected "
                             f"{', '.join(sorted(known))}")
        merged.update(data)
    merged.update(values)
    return TrainConfig(**merged)
