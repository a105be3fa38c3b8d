"""Exact per-row order statistics of non-negative values (|a|): top-k, lower median, entries above a bound.

These run once per hooked layer and sequence, so on a CPU they are a visible share of a forward:
``torch.median`` takes ~4 ms for one 512 x 576 hidden state, ``torch.topk`` ~0.5 ms and
``nonzero`` ~0.4 ms, against ~50 ms for the whole SmolLM2 block. On the CPU the values are
selected by radix instead: non-negative float32 order as their int32 bit patterns, so one
histogram of the top 16 bits (sign, exponent, 7 mantissa bits: bins 1/128 wide relative to their
value) says which bin holds the median and which holds the k-th largest, and only those bins'
entries need sorting (~0.5 ms in all). On other devices torch's kernels run where the data is,
except the median: ``torch.median`` sorts each row in one CUDA thread block, so ``radix_median``
selects it with whole-tensor kernels instead. Results equal torch's: same values, ties included,
lower median as ``torch.median``.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int

from .radix_median import lower_median

_BINS = 1 << 15  # top 16 bits of a non-negative float32
_INF_BIN = 0x7F80  # the bins of +inf and NaN: left to torch, whose semantics they then get


def _on_numpy(t: torch.Tensor) -> bool:
    return t.device.type == "cpu"


def _row_statistics(row: np.ndarray, k: int) -> tuple[np.ndarray, np.float32] | None:
    bits = row.view(np.int32) >> 16
    counts = np.bincount(bits, minlength=_BINS)
    if counts[_INF_BIN:].any():
        return None
    cum = np.cumsum(counts)
    n, mid = row.size, (row.size - 1) // 2

    b = int(np.searchsorted(cum, mid, side="right"))  # the bin holding rank ``mid`` (0-based, ascending)
    rank = mid - (int(cum[b - 1]) if b else 0)
    median = np.partition(row[bits == b], rank)[rank]

    t = int(np.searchsorted(cum, n - k, side="right"))  # the bin holding the k-th largest
    upper = row[bits >= t]
    top = np.sort(np.partition(upper, upper.size - k)[-k:])[::-1]
    return top, median


def order_statistics(
    mag: Float[torch.Tensor, "batch n"], k: int
) -> tuple[Float[torch.Tensor, "batch k"], Float[torch.Tensor, "batch"]]:
    """The ``k`` largest values of each row of ``mag`` (>= 0), descending, and its lower median."""
    if not 1 <= k <= mag.shape[1]:
        raise ValueError(f"k must be in 1..{mag.shape[1]} (the row length), got {k}")
    if _on_numpy(mag) and mag.dtype == torch.float32:
        rows = [_row_statistics(row, k) for row in mag.detach().contiguous().numpy()]
        if all(r is not None for r in rows):
            top = torch.from_numpy(np.stack([r[0] for r in rows]))
            median = torch.from_numpy(np.array([r[1] for r in rows], dtype=np.float32))
            return top, median
    # rows with +inf or NaN on the CPU get torch's median too: fast there, slow on a GPU
    device_path = not _on_numpy(mag) and mag.dtype == torch.float32
    median = lower_median(mag) if device_path else mag.median(dim=1).values
    return mag.topk(k, dim=1).values, median


def at_least(
    mag: Float[torch.Tensor, "batch n"], bound: Float[torch.Tensor, "batch"]
) -> tuple[Int[torch.Tensor, "hits"], Int[torch.Tensor, "hits"]]:
    """(row, column) of every entry with ``mag[row, column] >= bound[row]``, on the CPU."""
    if _on_numpy(mag):
        values, bounds = mag.detach().contiguous().numpy(), bound.detach().cpu().numpy()
        cols = [np.flatnonzero(row >= b) for row, b in zip(values, bounds)]
        rows = [np.full(len(c), i) for i, c in enumerate(cols)]
        return torch.from_numpy(np.concatenate(rows)).long(), torch.from_numpy(np.concatenate(cols)).long()
    rows, cols = (mag >= bound.to(mag.device)[:, None]).nonzero(as_tuple=True)
    return rows.cpu(), cols.cpu()
