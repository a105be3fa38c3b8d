"""Tokenization with explicit BOS handling, and fixed-length windows over a token stream.

The paper tokenizes without special tokens; whether a BOS token is prepended is a choice that
changes where massive activations sit, so it is always explicit and recorded.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from transformers import PreTrainedTokenizerBase

from ..validation.errors import UsageError


def bos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise UsageError("--prepend-bos asked for, but the tokenizer has neither a BOS nor an EOS token")
    return token


def encode(tokenizer: PreTrainedTokenizerBase, text: str, prepend_bos: bool = False,
           add_special_tokens: bool = False) -> Int[torch.Tensor, "pos"]:
    """Token ids of ``text``. ``add_special_tokens`` keeps the tokenizer's defaults (the paper's C4
    and PG-19 loaders do: one BOS at the start of the stream for LLaMA tokenizers)."""
    if not text.strip():
        raise UsageError("empty prompt: give some text to tokenize")
    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    if prepend_bos:
        ids = [bos_id(tokenizer)] + ids
    return torch.tensor(ids, dtype=torch.long)


def windows(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    seq_len: int,
    n_windows: int | None,
    prepend_bos: bool = False,
    source_name: str = "text",
    max_len: int | None = None,
    add_special_tokens: bool = False,
) -> Int[torch.Tensor, "window seq_len"]:
    """Consecutive non-overlapping windows of ``seq_len`` tokens (BOS included when prepended).

    ``n_windows=None`` takes every full window; ``max_len`` is the model's context length. Fewer
    windows than asked is allowed (the caller records how many); none at all is an error.

    ```python
    >>> import mech_interp as mi
    >>> model = mi.load_model("random:gpt2-tiny", device="cpu")
    >>> mi.windows(model.tokenizer, mi.load_text("builtin").text, seq_len=16, n_windows=3).shape
    torch.Size([3, 16])

    ```
    """
    if seq_len < 2:
        raise UsageError(f"--seq-len {seq_len} is too short: need at least 2 tokens")
    if max_len is not None and seq_len > max_len:
        raise UsageError(f"--seq-len {seq_len} is longer than the model's context of {max_len} tokens")
    if n_windows is not None and n_windows < 1:
        raise UsageError(f"{n_windows} windows asked for: need at least 1")
    stream = encode(tokenizer, text, prepend_bos=False, add_special_tokens=add_special_tokens)
    body = seq_len - 1 if prepend_bos else seq_len
    available = stream.numel() // body
    if available == 0:
        raise UsageError(
            f"text source {source_name!r} has {stream.numel()} tokens, fewer than one window of --seq-len {seq_len}"
        )
    count = available if n_windows is None else min(n_windows, available)
    out = stream[: count * body].reshape(count, body)
    if prepend_bos:
        out = torch.cat([torch.full((count, 1), bos_id(tokenizer)), out], dim=1)
    return out
