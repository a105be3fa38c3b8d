"""The device median (radix selection without host reads) equals ``torch.median`` bit for bit, and
the recorder's deferred path uses it: no per-row sort, no host read, overflow still refused."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mech_interp.core.dtype_range import ActivationRangeError
from mech_interp.core.radix_median import lower_median
from mech_interp.core.recorder import ActivationRecorder

from .test_deferred_stats import transfer

INF, NAN = float("inf"), float("nan")


def _from(values: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.dtype]:
    """|a| as the recorder makes it from activations of ``dtype``."""
    return values.to(dtype).abs().float(), dtype


def _cases() -> dict[str, tuple[torch.Tensor, torch.dtype]]:
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(3, 4097, generator=g)
    spread = torch.randn(4, 1000, generator=g) * 10.0 ** torch.randint(-30, 30, (4, 1000), generator=g)
    one_bin = 1.0 + torch.randint(0, 1 << 16, (2, 999), generator=g) * 2.0 ** -23  # same top 16 bits, all of them
    with_inf = torch.rand(4, 9, generator=g)
    with_inf[0, 3] = INF  # the median below it
    with_inf[1, :5] = INF  # the median is +inf
    with_inf[2] = INF
    with_nan = torch.rand(4, 10, generator=g)
    with_nan[0, 4] = NAN
    with_nan[1, :2] = torch.tensor([NAN, INF])
    with_nan[2] = NAN  # row 3 has none: it keeps its median
    different = torch.stack([torch.rand(600, generator=g) * 1e-30, torch.rand(600, generator=g) * 1e30,
                             torch.zeros(600), torch.randint(0, 2, (600,), generator=g).float(),
                             torch.rand(600, generator=g) * 1e-40])  # float32 denormals
    half_sub = torch.rand(3, 501, generator=g) * 1e-4  # float16 subnormals below 6.1e-5
    return {
        "normal float32": _from(normal, torch.float32),
        "n=1": _from(normal[:, :1], torch.float32),
        "n=2": _from(normal[:, :2], torch.float32),
        "odd n": _from(normal[:, :777], torch.float32),
        "even n": _from(normal[:, :778], torch.float32),
        "one long row": _from(torch.randn(1, 300_000, generator=g), torch.float32),
        "spread over exponents": _from(spread, torch.float32),
        "heavy ties": _from(torch.randint(0, 4, (3, 1001), generator=g).float(), torch.float32),
        "one top bin": _from(one_bin, torch.float32),
        "zeros": _from(torch.zeros(2, 64), torch.float32),
        "denormals": _from(torch.rand(3, 257, generator=g) * 1e-38, torch.float32),
        "very different rows": _from(different, torch.float32),
        "+inf": _from(with_inf, torch.float32),
        "nan": _from(with_nan, torch.float32),
        "bfloat16": _from(normal, torch.bfloat16),
        "bfloat16 ties": _from(torch.randint(0, 4, (3, 1000), generator=g).float(), torch.bfloat16),
        "bfloat16 denormals": _from(torch.rand(2, 300, generator=g) * 1e-39, torch.bfloat16),
        "bfloat16 +inf": _from(with_inf, torch.bfloat16),
        "bfloat16 nan": _from(with_nan, torch.bfloat16),
        "bfloat16 n=1": _from(normal[:, :1], torch.bfloat16),
        "float16": _from(normal, torch.float16),
        "float16 n=2": _from(normal[:, :2], torch.float16),
        "float16 subnormals": _from(half_sub, torch.float16),
        "float16 overflow to inf": _from(normal * 4e4, torch.float16),
        "float16 nan": _from(with_nan, torch.float16),
        "float16 read as float32": (normal.half().abs().float(), torch.float32),  # exact on the general path too
        "bfloat16 read as float32": (normal.bfloat16().abs().float(), torch.float32),
    }


CASES = _cases()


def _assert_same_bits(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == expected.dtype == torch.float32 and got.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan), (got, expected)
    assert torch.equal(got[~nan].view(torch.int32), expected[~nan].view(torch.int32)), (got, expected)


@pytest.mark.parametrize("case", CASES)
def test_lower_median_equals_torch_bit_for_bit(case):
    mag, source_dtype = CASES[case]
    _assert_same_bits(lower_median(mag, source_dtype), mag.median(dim=1).values)


def test_the_cases_reach_what_they_name():
    """The special cases hold what makes them special (else the comparison above proves little)."""
    assert (CASES["denormals"][0] < torch.finfo(torch.float32).tiny).float().mean() > 0.5
    assert (CASES["float16 subnormals"][0] < torch.finfo(torch.float16).tiny).float().mean() > 0.3
    assert CASES["+inf"][0].median(dim=1).values[1:3].isinf().all()
    assert CASES["nan"][0].median(dim=1).values.isnan().tolist() == [True, True, True, False]
    one_bin = CASES["one top bin"][0].view(torch.int32)
    assert (one_bin >> 16).unique().numel() == 1 and (one_bin & 0xFFFF).unique().numel() > 900
    assert CASES["float16 overflow to inf"][0].isinf().any()
    assert not torch.equal(CASES["bfloat16"][0], CASES["normal float32"][0])


def test_a_non_contiguous_input_and_an_empty_batch():
    mag = torch.rand(301, 4).t()  # rows are strided
    _assert_same_bits(lower_median(mag), mag.median(dim=1).values)
    assert lower_median(torch.rand(0, 5)).shape == (0,)


def test_an_empty_row_is_refused():
    with pytest.raises(ValueError, match="at least one entry"):
        lower_median(torch.rand(2, 0))


# ---------------------------------------------------------------- no host reads

# aten ops that make the host wait for a GPU: they return a value or a size known only on the device
SYNCING_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.bincount", "aten._unique",
               "aten._unique2", "aten.unique_dim", "aten.unique_consecutive", "aten.repeat_interleave",
               "aten.equal", "aten.is_nonzero", "aten.histc", "aten.index"}  # aten.index: a boolean mask is a nonzero
SORTING_OPS = {"aten.median", "aten.kthvalue", "aten.sort", "aten.nanmedian", "aten.quantile"}
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


class OpNames(TorchDispatchMode):
    """Every aten op dispatched, and each copy to another device as ``copy to <device>``."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        self.names.append(name)
        if name in ("aten._to_copy", "aten.to", "aten.copy_") and kwargs.get("device") is not None:
            self.names.append(f"copy to {kwargs['device']}")
        return func(*args, **kwargs)


@pytest.fixture
def no_host_reads(monkeypatch):
    """Python-level reads of a tensor fail (on the CPU they dispatch nothing the mode would see)."""
    for name in HOST_READS:
        def refuse(*args, _name=name, **kwargs):
            raise AssertionError(f"Tensor.{_name} read a tensor on the host")
        monkeypatch.setattr(torch.Tensor, name, refuse)


def _assert_no_syncs(names: list[str]) -> None:
    assert not SYNCING_OPS.intersection(names) and not any(n.startswith("copy to") for n in names), names


@pytest.mark.parametrize("source_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_median_never_waits_for_the_device(source_dtype, no_host_reads):
    mag, _ = _from(torch.randn(3, 1001), source_dtype)
    with OpNames() as ops:
        lower_median(mag, source_dtype)
    _assert_no_syncs(ops.names)
    assert not SORTING_OPS.intersection(ops.names)
    assert ops.names.count("aten.index_add_") == (2 if source_dtype == torch.float32 else 1)  # the mode saw the work
    with OpNames() as control:  # and it sees a syncing op when one runs
        mag.nonzero()
    assert "aten.nonzero" in control.names
    with pytest.raises(AssertionError, match="Tensor.item"):
        mag.sum().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_deferred_recording_sorts_no_row_and_reads_nothing(dtype, no_host_reads):
    recorder = ActivationRecorder(["h"], k=2)
    acts = torch.randn(2, 16, 24).to(dtype)
    with transfer("always"), OpNames() as ops:
        recorder.record("h", acts, torch.zeros(2, 16, dtype=torch.long))
    _assert_no_syncs(ops.names)
    assert "aten.index_add_" in ops.names and not SORTING_OPS.intersection(ops.names)
    assert "aten.amax" not in ops.names  # the peak is the top score


@pytest.mark.parametrize("bad", [INF, NAN])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_deferred_path_refuses_a_non_finite_half_forward(bad, dtype):
    """The flush checks the top score as the peak: ``topk`` must put NaN first, as ``amax`` propagates it."""
    recorder = ActivationRecorder(["h"], k=1)
    acts = torch.randn(3, 4, 8).to(dtype)
    acts[1, 2, 5] = bad
    with transfer("always"), pytest.raises(ActivationRangeError, match=f"overflowed {dtype}"):
        recorder.run_batch(lambda: recorder.record("h", acts, torch.zeros(3, 4, dtype=torch.long)))
