"""Perplexity over token windows, optionally under interventions.

PPL = exp(sum of next-token NLL / number of predicted tokens), every window predicting its
positions 1..T-1 (a prepended BOS is never a target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ..core.dtype_range import ActivationRangeError, check_peak, needs_range_check
from ..models.hook_names import engine_hooks, resid_post
from ..models.hooked_model import HookedModel


@dataclass(frozen=True)
class Perplexity:
    nll_sum: float
    n_tokens: int
    n_windows: int

    @property
    def value(self) -> float:
        mean = self.nll_sum / self.n_tokens
        return math.exp(mean) if mean < 700 else (float("inf") if mean >= 700 else float("nan"))


def next_token_nll(
    logits: Float[torch.Tensor, "batch pos d_vocab"], tokens: Int[torch.Tensor, "batch pos"]
) -> Float[torch.Tensor, "batch pos-1"]:
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def perplexity(
    model: HookedModel,
    windows: Int[torch.Tensor, "window pos"],
    hooks: Sequence[tuple[str, Callable]] = (),
    batch_size: int = 1,
    progress: bool = True,
    desc: str = "perplexity",
) -> Perplexity:
    """PPL of ``model`` on ``windows`` with plain forward ``hooks`` (``(hook_name, fn)`` pairs,
    e.g. ``intervention.as_hook()``) in place.

    In float16/bfloat16 every block's output is checked against the dtype's range (its peak read
    back with the loss, once per batch), and a non-finite loss stops the run: an overflow would
    otherwise be reported as a perplexity.

    ```python
    >>> import mech_interp as mi
    >>> model = mi.load_model("random:gpt2-tiny", device="cpu")
    >>> seqs = mi.windows(model.tokenizer, mi.load_text("builtin").text, seq_len=32, n_windows=2)
    >>> result = mi.perplexity(model, seqs, progress=False)
    >>> result.n_tokens  # 2 windows x 31 predicted tokens
    62

    ```
    """
    nll_sum, n_tokens = 0.0, 0
    hooks = list(hooks)
    half = needs_range_check(model.cfg.dtype)
    checked = [resid_post(i) for i in range(model.cfg.n_layers)] if half else []
    peaks: list[torch.Tensor] = []

    def keep_peak(acts: Float[torch.Tensor, "batch pos d_model"], hook) -> None:
        peaks.append(acts.detach().abs().amax().double())  # read with the loss: one host copy per batch

    hooks += [(name, keep_peak) for name in checked]
    with torch.inference_mode(), engine_hooks(model, hooks):
        for batch in tqdm(windows.split(batch_size), desc=desc, unit="batch", disable=not progress):
            batch = batch.to(model.cfg.device)
            peaks.clear()
            nll = next_token_nll(model(batch, return_type="logits"), batch)
            batch_sum, *peak_values = torch.stack([nll.double().sum(), *peaks]).tolist()
            for name, peak in zip(checked, peak_values):
                check_peak(peak, model.cfg.dtype, name)
            if half and not math.isfinite(batch_sum):
                raise ActivationRangeError(
                    f"{desc}: the loss is not finite in {model.cfg.dtype}: rerun in float32")
            nll_sum += batch_sum
            n_tokens += nll.numel()
    return Perplexity(nll_sum=nll_sum, n_tokens=n_tokens, n_windows=int(windows.shape[0]))
