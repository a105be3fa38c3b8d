"""A statistics pass can stop, be saved, move and resume: the result equals one uninterrupted pass."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mech_interp.core.criterion import MassiveCriterion
from mech_interp.core.recorder import ActivationRecorder
from mech_interp.core.running_stats import KeyedSums, Mean, TopK

SITES = ["a", "b"]
CRITERION = MassiveCriterion(min_abs=50, min_ratio=100)


def _batches(n: int = 6):
    torch.manual_seed(0)
    for i in range(n):
        acts = torch.randn(2, 8, 16)
        acts[:, 0, 3] = 300.0 + i  # a massive entry at the first position, varying by batch
        acts[1, 5, 7] = -400.0
        yield acts, torch.randint(0, 50, (2, 8))


def _feed(recorder: ActivationRecorder, batches) -> None:
    for acts, labels in batches:
        for k, site in enumerate(SITES):
            recorder.record(site, acts * (k + 1), labels)


def _tables(recorder: ActivationRecorder) -> list[pd.DataFrame]:
    stats = recorder.result()
    return [stats.summary, stats.top_entries, stats.massive]


def test_saved_and_resumed_pass_equals_one_pass(tmp_path):
    whole = ActivationRecorder(SITES, k=3, criterion=CRITERION)
    _feed(whole, _batches())
    batches = list(_batches())
    first = ActivationRecorder(SITES, k=3, criterion=CRITERION)
    _feed(first, batches[:3])
    torch.save(first.state_dict(), tmp_path / "stats.pt")
    resumed = ActivationRecorder(SITES, k=3, criterion=CRITERION)
    resumed.load_state_dict(torch.load(tmp_path / "stats.pt", weights_only=False))
    _feed(resumed, batches[3:])
    for got, expected in zip(_tables(resumed), _tables(whole)):
        pd.testing.assert_frame_equal(got, expected)
    assert resumed.n_sequences == whole.n_sequences == 12
    massive = resumed.result().massive
    assert set(map(tuple, massive[["site", "position", "dim"]].values.tolist())) == {
        ("a", 0, 3), ("a", 5, 7), ("b", 0, 3), ("b", 5, 7)}


def test_state_of_another_configuration_is_refused():
    recorder = ActivationRecorder(SITES, k=3, criterion=CRITERION)
    _feed(recorder, _batches(1))
    with pytest.raises(ValueError, match="other sites, k or criterion"):
        ActivationRecorder(SITES, k=2, criterion=CRITERION).load_state_dict(recorder.state_dict())
    with pytest.raises(ValueError, match="cannot be loaded into a TopK"):
        TopK(3, 1).load_state_dict(Mean().state_dict())


def test_stats_move_between_devices_and_keep_accumulating():
    """``to_`` moves every tensor of the state (the meta device stands in for a GPU here) and later
    updates accumulate on the state's device."""
    mean, top, sums = Mean(), TopK(2, n_meta=1), KeyedSums(n_keys=1, n_values=1)
    mean.add(torch.ones(3, 2))
    top.add(torch.tensor([1.0, 5.0]), torch.tensor([-1.0, 5.0]), torch.tensor([[0], [1]]))
    sums.add(torch.tensor([[4], [4], [2]]), torch.tensor([[1.0], [2.0], [3.0]]))
    for stat in (mean, top, sums):
        moved = type(stat).__new__(type(stat))
        moved.__dict__.update(stat.__dict__)
        moved.to_("meta")
        assert moved.device.type == "meta"
        assert all(v is None or v.device.type == "meta" for v in (getattr(moved, n) for n in moved._state))
    mean.add(torch.full((1, 2), 5.0))
    torch.testing.assert_close(mean.mean(), torch.full((2,), 2.0, dtype=torch.float64))
    assert sums.keys.flatten().tolist() == [2, 4] and sums.counts.tolist() == [1, 2]
    torch.testing.assert_close(sums.sums.flatten(), torch.tensor([3.0, 3.0], dtype=torch.float64))
    assert top.meta.flatten().tolist() == [1, 0]


def test_a_failing_forward_leaves_nothing_recorded():
    """Sites recorded before a forward fails are not folded in: the batch counts once, when it runs through."""
    (acts, labels), = _batches(1)
    recorder = ActivationRecorder(SITES, criterion=CRITERION)

    def failing():
        recorder.record("a", acts, labels)
        raise RuntimeError("the forward failed after site a")

    with pytest.raises(RuntimeError, match="after site a"):
        recorder.run_batch(failing)
    recorder.run_batch(lambda: [recorder.record(site, acts, labels) for site in SITES])
    once = ActivationRecorder(SITES, criterion=CRITERION)
    once.run_batch(lambda: [once.record(site, acts, labels) for site in SITES])
    pd.testing.assert_frame_equal(recorder.result().summary, once.result().summary)
    assert recorder.result().summary["n_sequences"].tolist() == [2, 2]
