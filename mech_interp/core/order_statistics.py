"""Exact per-sequence order statistics of non-negative values (|a| over positions x dims): top-k,
lower median, entries above a bound.

These run once per hooked layer and sequence, so on a CPU they are a visible share of a forward:
``torch.median`` takes ~4 ms for one 512 x 576 hidden state and ``torch.topk`` ~1.5 ms, against
~45 ms for the whole SmolLM2 block. On the CPU numpy does it instead, in ~0.35 ms, on the int32 bit patterns of the values
(non-negative float32s order as their bit patterns, and numpy selects integers ~2.5x faster):

- the median by one ``np.partition`` (introselect, ~0.25 ms; a radix select's histogram alone took
  ~0.8 ms);
- the k largest from the rows (positions) with the k largest peaks: the k-th largest entry is at
  least the k-th largest row peak, so every row holding one of the k largest entries is among them;
- the entries at or above a bound from the rows whose peak reaches it (a handful: the bound is
  the massive threshold or the k-th largest entry, whichever is lower).

On other devices torch's kernels run where the data is, except the median: ``torch.median`` sorts
each row in one CUDA thread block, so ``radix_median`` selects it with whole-tensor kernels instead.
Results equal torch's: same values, ties included, lower median as ``torch.median``; sequences
holding +inf or NaN are left to torch, whose semantics they then get.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int

from .radix_median import lower_median


def _on_numpy(t: torch.Tensor) -> bool:
    return t.device.type == "cpu"


_INF_BITS = 0x7F800000  # +inf; NaNs, their sign cleared by abs, lie above it


def _sequence_statistics(mag: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Top-k (descending) and lower median of one sequence's ``[pos, d]`` float32 magnitudes;
    None when it holds +inf or NaN."""
    bits = mag.view(np.int32)
    peaks = bits.max(axis=1)
    if peaks.max() >= _INF_BITS:
        return None
    flat = bits.ravel()
    mid = (flat.size - 1) // 2
    median = np.partition(flat, mid)[mid: mid + 1]
    if k < peaks.size:
        kth_peak = np.partition(peaks, peaks.size - k)[peaks.size - k]
        flat = bits[peaks >= kth_peak].ravel()
    top = np.sort(np.partition(flat, flat.size - k)[-k:])[::-1]
    return top.view(np.float32), median.view(np.float32)


def order_statistics(
    mag: Float[torch.Tensor, "batch pos d"], k: int
) -> tuple[Float[torch.Tensor, "batch k"], Float[torch.Tensor, "batch"]]:
    """The ``k`` largest values over each sequence's positions x dims (``mag`` >= 0), descending,
    and their lower median."""
    n = mag.shape[1] * mag.shape[2]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the entries of one sequence), got {k}")
    if _on_numpy(mag) and mag.dtype == torch.float32:
        rows = [_sequence_statistics(seq, k) for seq in mag.detach().contiguous().numpy()]
        if all(r is not None for r in rows):
            top = torch.from_numpy(np.stack([r[0] for r in rows]))
            median = torch.from_numpy(np.concatenate([r[1] for r in rows]))
            return top, median
    # sequences with +inf or NaN on the CPU get torch's median too: fast there, slow on a GPU
    flat = mag.flatten(1)
    device_path = not _on_numpy(mag) and mag.dtype == torch.float32
    median = lower_median(flat) if device_path else flat.median(dim=1).values
    return flat.topk(k, dim=1).values, median


def at_least(
    mag: Float[torch.Tensor, "batch pos d"], bound: Float[torch.Tensor, "batch"]
) -> tuple[Int[torch.Tensor, "hits"], Int[torch.Tensor, "hits"]]:
    """(sequence, flat index ``pos * d + dim``) of every entry with ``mag >= bound[sequence]``, on
    the CPU, ordered by sequence, then index."""
    d = mag.shape[2]
    if _on_numpy(mag):
        mag = mag.detach().contiguous()
        values, peaks, bounds = mag.numpy(), mag.amax(dim=2).numpy(), bound.detach().cpu().numpy()
        seqs, cols = [], []
        for i, (seq, peak, b) in enumerate(zip(values, peaks, bounds)):
            rows = np.flatnonzero(~(peak < b))  # only rows whose peak reaches the bound (or is NaN) hold hits
            r, c = np.nonzero(seq[rows] >= b)
            cols.append(rows[r] * d + c)
            seqs.append(np.full(len(c), i))
        return torch.from_numpy(np.concatenate(seqs)).long(), torch.from_numpy(np.concatenate(cols)).long()
    seqs, cols = (mag.flatten(1) >= bound.to(mag.device)[:, None]).nonzero(as_tuple=True)
    return seqs.cpu(), cols.cpu()
