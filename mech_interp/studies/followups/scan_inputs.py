"""The prompt and the perplexity windows as one batch, so that the scan and each candidate's edit are one forward each.

Rows of unequal length are right-padded: in a causal model no position sees a later one, so the padding changes
nothing before it, and every statistic reads only each row's own residual positions (``n_prefix`` learned prefix
positions, then its tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from ...core.token_layout import TokenLayout
from ...data.texts import load_text
from ...data.tokens import encode, windows
from ...metrics.layer_stats import PREFIX_NAME


@dataclass(frozen=True)
class ScanInputs:
    tokens: Int[torch.Tensor, "row pos"]  # row 0: the prompt; rows 1..: the windows; right-padded to one length
    prompt_len: int  # tokens of the prompt
    window_len: int  # tokens of each window
    n_prefix: int  # learned prefix positions in front of every row's tokens (core.token_layout)
    labels: tuple[str, ...]  # one per residual position of the prompt
    text: str  # where the windows come from

    @property
    def n_windows(self) -> int:
        return self.tokens.shape[0] - 1

    def prompt(self, acts: Float[torch.Tensor, "row pos ..."]) -> Float[torch.Tensor, "1 prompt_pos ..."]:
        """The prompt's own residual positions of a hook's activations."""
        return acts[:1, : self.n_prefix + self.prompt_len]

    def windows(self, acts: Float[torch.Tensor, "row pos ..."]) -> Float[torch.Tensor, "window window_pos ..."]:
        return acts[1:, : self.n_prefix + self.window_len]

    def window_tokens(self) -> Int[torch.Tensor, "window window_len"]:
        return self.tokens[1:, : self.window_len]


def scan_inputs(context, prompt: str, text: str, n_seqs: int, seq_len: int, layout: TokenLayout) -> ScanInputs:
    """``prompt`` and ``n_seqs`` consecutive windows of ``seq_len`` tokens of ``text``, tokenized as the run's options
    say (``--prepend-bos``)."""
    options = context.options
    ids = encode(context.tokenizer, prompt, options.prepend_bos)
    source = load_text(text)
    seqs = windows(context.tokenizer, source.text, seq_len, n_seqs, options.prepend_bos, source.name, context.n_ctx,
                   add_special_tokens=source.special_tokens)
    length = max(ids.numel(), seq_len)
    rows = [ids, *seqs]
    tokens = torch.stack([torch.cat([row, row[-1:].expand(length - row.numel())]) for row in rows])
    labels = (PREFIX_NAME,) * layout.n_prefix_tokens + tuple(context.tokenizer.decode([t]) for t in ids.tolist())
    return ScanInputs(tokens, ids.numel(), seq_len, layout.n_prefix_tokens, labels, source.name)
