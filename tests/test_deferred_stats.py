"""The recorder's GPU path (reductions kept on the device, one host copy per batch) run on the CPU:
it gives the host path's statistics bit for bit, and it never reads back inside a forward."""

from __future__ import annotations

import collections
import contextlib

import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mech_interp.core import transfer_mode
from mech_interp.core.criterion import MassiveCriterion
from mech_interp.core.dtype_range import ActivationRangeError
from mech_interp.core.recorder import ActivationRecorder
from mech_interp.data.texts import load_text
from mech_interp.data.tokens import encode, windows
from mech_interp.metrics.layer_stats import collect_layer_stats

from .conftest import PLANT_LAYER, PLANT_PROMPT

CRITERION = MassiveCriterion(min_abs=20, min_ratio=50)


@contextlib.contextmanager
def transfer(mode: str):
    before = transfer_mode.deferred_transfer_mode()
    transfer_mode.set_deferred_transfer(mode)
    try:
        yield
    finally:
        transfer_mode.set_deferred_transfer(before)


def _tables(stats) -> list[pd.DataFrame]:
    return [stats.summary, stats.top_entries, stats.massive]


def _assert_same(a, b) -> None:
    for x, y in zip(_tables(a), _tables(b)):
        pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True), check_exact=True)


def _acts(dtype: torch.dtype, n: int = 5):
    torch.manual_seed(1)
    for i in range(n):
        acts = torch.randn(3, 16, 24)
        acts[:, 0, 5] = 900.0 + i  # massive on every sequence
        acts[1, 7, 2] = -1200.0
        acts[2, 3] = acts[2, 3].sign() * 2.0  # ties in the bulk
        acts[0, 4, :3] = acts[0].abs().max()  # ties with the largest entry of sequence 0
        yield acts.to(dtype), torch.randint(0, 99, (3, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("capacity", [64, 1])
def test_deferred_recorder_equals_host_recorder(dtype, capacity):
    """Same statistics from both paths; capacity 1 forces the overflow-and-rerun loop of run_batch."""
    results = {}
    for mode in ("never", "always"):
        recorder = ActivationRecorder(["a", "b"], k=3, criterion=CRITERION, capacity=capacity)
        with transfer(mode):
            for acts, labels in _acts(dtype):
                def forward(acts=acts, labels=labels):
                    recorder.record("a", acts, labels)
                    recorder.record("b", acts.flip(1) * 2, labels)
                recorder.run_batch(forward)
            results[mode] = recorder.result()
    _assert_same(results["never"], results["always"])
    assert len(results["always"].massive) > 0


def test_overflow_outside_run_batch_is_an_error_not_a_wrong_table():
    recorder = ActivationRecorder(["a"], k=1, criterion=CRITERION, capacity=1)
    acts, labels = next(_acts(torch.float32))
    with transfer("always"):
        recorder.record("a", acts, labels)  # two massive entries in sequence 1: more than the capacity
        with pytest.raises(RuntimeError, match="run_batch"):
            recorder.result()


def test_deferred_half_overflow_is_refused_at_the_flush():
    recorder = ActivationRecorder(["a"], k=1)
    acts = torch.ones(1, 4, 8, dtype=torch.float16)
    acts[0, 0, 0] = float("inf")
    with transfer("always"), pytest.raises(ActivationRangeError, match="overflowed torch.float16"):
        recorder.run_batch(lambda: recorder.record("a", acts, torch.zeros(1, 4, dtype=torch.long)))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_layer_stats_equal_on_both_paths(planted, batch_size):
    hf, model, _ = planted
    seqs = torch.cat([encode(hf.tokenizer, PLANT_PROMPT)[None]] * 2
                     + [windows(hf.tokenizer, load_text("builtin").text, encode(hf.tokenizer, PLANT_PROMPT).numel(), 4)])
    results = {}
    for mode in ("never", "always"):
        with transfer(mode):
            results[mode] = collect_layer_stats(model, seqs.split(batch_size), progress=False)
    _assert_same(results["never"], results["always"])
    assert results["always"].first_massive_layer() == PLANT_LAYER


# ---------------------------------------------------------------- host reads during a pass

# aten ops whose result size or value the host must know: on a GPU each waits for the device.
SYNCING_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2", "aten.unique_dim",
               "aten.unique_consecutive", "aten.repeat_interleave", "aten.equal", "aten.is_nonzero"}
# Tensor methods that read a tensor on the host (on the CPU they dispatch nothing the mode sees).
HOST_READS = ("cpu", "numpy", "tolist", "item", "__bool__", "__int__", "__float__")


class HostReads(TorchDispatchMode):
    """Counts host reads from the first forward until ``result()``: syncing aten ops, explicit
    copies to a device (``copy=True``), and the Python-level reads of ``HOST_READS``. Inside
    ``ActivationRecorder.flush`` only copies count: what follows its copy works on the host.
    Plain ``.to(device)`` moves are left out: on a one-device CPU run they cannot be told from the
    no-op ``.to(cfg.device)`` calls TransformerLens makes in every forward."""

    def __init__(self, monkeypatch) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.on, self.in_flush = True, False
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(t, *args, _name=name, _original=original, **kwargs):
                if self.on and not self.in_flush:
                    self.counts[f"Tensor.{_name}"] += 1
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        # under inference_mode a copy dispatches as aten.to
        copy = name in ("aten._to_copy", "aten.to") and "device" in kwargs and kwargs.get("copy")
        if self.on and (copy or (not self.in_flush and name in SYNCING_OPS)):
            self.counts[name] += 1
        return func(*args, **kwargs)


def _count_host_reads(monkeypatch, model, batches, mode: str) -> collections.Counter:
    reads = HostReads(monkeypatch)
    result, flush = ActivationRecorder.result, ActivationRecorder.flush

    def stop_counting(self, *args, **kwargs):  # the final tables are built on the host, once
        reads.on = False
        return result(self, *args, **kwargs)

    def flushing(self):
        reads.in_flush = True
        try:
            return flush(self)
        finally:
            reads.in_flush = False

    monkeypatch.setattr(ActivationRecorder, "result", stop_counting)
    monkeypatch.setattr(ActivationRecorder, "flush", flushing)
    with transfer(mode), reads:
        collect_layer_stats(model, batches, progress=False)
    return reads.counts


def test_deferred_pass_reads_the_host_once_per_batch(planted, monkeypatch):
    hf, model, _ = planted
    batches = list(torch.cat([encode(hf.tokenizer, PLANT_PROMPT)[None]] * 6).split(2))  # 3 batches
    counts = _count_host_reads(monkeypatch, model, batches, "always")
    assert counts == collections.Counter({"aten.to": len(batches)})  # one copy per batch, nothing else
    # The counter sees the per-layer reads of the host path, so the bound above can fail.
    host = _count_host_reads(monkeypatch, model, batches, "never")
    assert sum(host.values()) >= model.cfg.n_layers * len(batches), host
