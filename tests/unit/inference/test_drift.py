"""PSI and the sliding-window drift monitor, on real models and synthetic reference data."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from stream_infer.inference.baseline import (
    bin_counts,
    build_baseline,
    compare_dtype,
    edge_matrix,
    greater_counts,
    tensor_stats,
)
from stream_infer.inference.drift import DriftMonitor, psi
from stream_infer.inference.model import Model
from tests.models import loaded


class Clock:
    """A clock the test moves by hand: windows expire without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _feeds(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": x.astype(np.float32)}


@pytest.fixture(scope="module")
def reference(linear: Model) -> tuple[Model, np.ndarray]:
    rng = np.random.default_rng(11)
    return linear, rng.normal(loc=[0, 5, -3, 100], scale=[1, 2, 0.5, 10], size=(40_000, 4))


@pytest.fixture(scope="module")
def baseline(reference):
    model, x = reference
    return build_baseline(model, [_feeds(x[:20_000]), _feeds(x[20_000:])])


def _observe(monitor: DriftMonitor, model: Model, x: np.ndarray, now: float, batch=512) -> None:
    for start in range(0, len(x), batch):
        feeds = _feeds(x[start : start + batch])
        monitor.observe(feeds, model.predict(feeds), now)


# -- PSI ---------------------------------------------------------------------------------


def test_psi_is_the_smoothed_formula() -> None:
    expected, actual = np.array([50, 30, 20]), np.array([20, 30, 50])
    # By hand: half a row added to each of the 3 bins of both.
    p = [(c + 0.5) / 101.5 for c in (50, 30, 20)]
    q = [(c + 0.5) / 101.5 for c in (20, 30, 50)]
    by_hand = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    assert float(psi(expected, actual)) == pytest.approx(by_hand, rel=1e-12)
    assert float(psi(expected, expected)) == 0.0


def test_psi_stays_finite_with_empty_bins() -> None:
    value = float(psi(np.array([25, 25, 25, 25]), np.array([0, 0, 0, 1000])))
    assert math.isfinite(value) and value > 2.0
    assert math.isfinite(float(psi(np.array([0, 100, 0]), np.array([100, 0, 0]))))


def test_padded_bins_are_left_out() -> None:
    # Column 0 has 2 real bins, column 1 has 3; padding must not change column 0's PSI.
    expected = np.array([[60, 40], [40, 30], [0, 30]])
    actual = np.array([[30, 10], [70, 10], [0, 80]])
    both = psi(expected, actual, bins=np.array([2, 3]))
    assert both[0] == pytest.approx(float(psi(expected[:2, 0], actual[:2, 0])))
    assert both[1] == pytest.approx(float(psi(expected[:, 1], actual[:, 1])))


# -- bins --------------------------------------------------------------------------------


def test_quantile_edges_split_the_reference_evenly() -> None:
    x = np.random.default_rng(1).uniform(0, 1, size=(10_000, 1)).astype(np.float32)
    col = tensor_stats("u", x, bins=10).columns[0]
    np.testing.assert_allclose(col.edges, np.arange(1, 10) / 10, atol=0.02)
    assert col.counts.sum() == 10_000
    assert (np.abs(col.counts - 1000) <= 2).all()


def test_discrete_values_get_one_bin_each_and_edges_are_deduplicated() -> None:
    labels = np.array([0] * 700 + [1] * 250 + [2] * 50)[:, None]
    col = tensor_stats("label", labels, bins=10).columns[0]
    assert col.edges.tolist() == [0.0, 1.0]
    assert col.counts.tolist() == [700, 250, 50]
    # Heavy ties in a continuous feature: duplicated deciles collapse to one edge.
    skewed = np.concatenate([np.zeros(600), np.linspace(1, 2, 400)])[:, None]
    col = tensor_stats("s", skewed, bins=10).columns[0]
    assert col.edges[0] == 0.0 and len(col.edges) == len(set(col.edges.tolist())) == 4
    assert col.counts[0] == 600  # every zero in the first, right-closed bin
    constant = tensor_stats("c", np.full((50, 1), 3.0), bins=10).columns[0]
    assert constant.edges.size == 0 and constant.counts.tolist() == [50]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8, np.int64, bool])
def test_binning_matches_a_searchsorted_reference(dtype) -> None:
    rng = np.random.default_rng(5)
    raw = rng.normal(scale=20, size=(3000, 6))
    data = (raw > 0) if dtype is bool else raw.astype(dtype)
    stats = tensor_stats("t", data, bins=7)
    cmp = compare_dtype(data.dtype)
    # Values lying exactly on an edge belong to the bin below it (right-closed bins).
    probe = data.copy()
    edges0 = stats.columns[0].edges
    if edges0.size:
        probe[: edges0.size, 0] = edges0.astype(data.dtype)
    counts = bin_counts(greater_counts(probe.astype(cmp), edge_matrix(stats.columns, cmp)), 3000)
    for j, col in enumerate(stats.columns):
        cut = col.edges.astype(cmp)
        slow = np.bincount(
            np.searchsorted(cut, probe[:, j].astype(cmp), side="left"), minlength=len(cut) + 1
        )
        assert counts[: len(cut) + 1, j].tolist() == slow.tolist()
        assert counts[len(cut) + 1 :, j].sum() == 0


# -- the monitor ---------------------------------------------------------------------------


def test_same_distribution_is_stable(reference, baseline) -> None:
    model, _ = reference
    fresh = np.random.default_rng(99).normal(
        loc=[0, 5, -3, 100], scale=[1, 2, 0.5, 10], size=(20_000, 4)
    )
    monitor = DriftMonitor(baseline, 60, clock=Clock())
    _observe(monitor, model, fresh, now=1000.0)
    snap = monitor.snapshot(1000.0)
    assert snap.rows == 20_000
    assert set(snap.features) == {("x", str(i)) for i in range(4)}
    assert set(snap.outputs) == {("scores", "0"), ("scores", "1"), ("scores", "2"), ("best", "0")}
    assert max(snap.features.values()) < 0.01
    assert max(snap.outputs.values()) < 0.01


def test_a_two_sigma_shift_in_one_feature_is_flagged(reference, baseline) -> None:
    model, _ = reference
    fresh = np.random.default_rng(7).normal(
        loc=[0, 5, -3, 100], scale=[1, 2, 0.5, 10], size=(20_000, 4)
    )
    fresh[:, 2] += 2 * 0.5  # feature 2 moves by two standard deviations
    monitor = DriftMonitor(baseline, 60)
    _observe(monitor, model, fresh, now=5.0)
    snap = monitor.snapshot(5.0)
    assert snap.features[("x", "2")] > 0.25
    assert all(v < 0.1 for k, v in snap.features.items() if k != ("x", "2"))


def test_output_moments_are_those_of_the_window(reference, baseline) -> None:
    model, x = reference
    clock = Clock(0.0)
    monitor = DriftMonitor(baseline, 60, clock=clock)
    seen = []
    for i, part in enumerate(np.array_split(x[:3000], 7)):
        clock.now = i * 7.0  # batches spread over several slots
        feeds = _feeds(part)
        outputs = model.predict(feeds)
        monitor.observe(feeds, outputs)
        seen.append(outputs[0])
    scores = np.concatenate(seen).astype(np.float64)
    snap = monitor.snapshot()
    for j in range(3):
        assert snap.output_mean[("scores", str(j))] == pytest.approx(scores[:, j].mean())
        assert snap.output_std[("scores", str(j))] == pytest.approx(scores[:, j].std())


def test_old_slots_leave_the_window(reference, baseline) -> None:
    model, x = reference
    clock = Clock(10_000.0)
    monitor = DriftMonitor(baseline, window_s=60, clock=clock)
    shifted = x[:4000].copy()
    shifted[:, 0] += 3.0
    _observe(monitor, model, shifted, now=clock.now)
    assert monitor.snapshot().features[("x", "0")] > 0.25
    clock.now += 30  # half a window later: the shifted rows still count
    _observe(monitor, model, x[20_000:24_000], now=clock.now)
    mid = monitor.snapshot()
    assert mid.rows == 8000 and mid.features[("x", "0")] > 0.25
    clock.now += 35  # 65 s after the shift: its slot has gone
    late = monitor.snapshot()
    assert late.rows == 4000 and late.features[("x", "0")] < 0.1
    clock.now += 60  # nothing left at all
    empty = monitor.snapshot()
    assert empty.rows == 0
    assert all(math.isnan(v) for v in empty.features.values())
    assert all(math.isnan(v) for v in empty.output_mean.values())


def test_a_slot_is_reused_without_mixing_in_its_old_counts(reference, baseline) -> None:
    model, x = reference
    monitor = DriftMonitor(baseline, window_s=60, slots=12)
    shifted = x[:2000] + 5.0
    _observe(monitor, model, shifted, now=3.0)  # slot 0 of the ring
    _observe(monitor, model, x[:2000], now=63.0)  # slot 12: same ring position, one lap later
    snap = monitor.snapshot(63.0)
    assert snap.rows == 2000 and max(snap.features.values()) < 0.1
    _observe(monitor, model, shifted, now=2.0)  # a straggler older than the window is dropped
    assert monitor.snapshot(63.0).rows == 2000


def test_memory_does_not_grow_with_traffic(reference, baseline) -> None:
    model, x = reference
    monitor = DriftMonitor(baseline, window_s=10)
    feeds = _feeds(x[:512])
    outputs = model.predict(feeds)
    before = [b.greater.nbytes for b in monitor._blocks()]
    for step in range(2000):
        monitor.observe(feeds, outputs, now=step * 0.05)
    assert [b.greater.nbytes for b in monitor._blocks()] == before
    # 10 s of 20 batches a second, 512 rows each, to the nearest slot.
    assert 9 * 20 * 512 <= monitor.snapshot(2000 * 0.05).rows <= 10 * 20 * 512


def test_batches_that_do_not_fit_are_counted_not_raised(reference, baseline) -> None:
    model, x = reference
    monitor = DriftMonitor(baseline, 60)
    feeds = _feeds(x[:10])
    outputs = model.predict(feeds)
    monitor.observe({"x": np.zeros((10, 5), np.float32)}, outputs, now=1.0)  # wrong width
    monitor.observe(feeds, [outputs[0]], now=1.0)  # an output missing
    monitor.observe(feeds, [outputs[0], ["not", "a", "tensor"]], now=1.0)
    snap = monitor.snapshot(1.0)
    assert snap.mismatched == 3
    assert snap.rows == 30  # whatever fitted was still counted


def test_observe_and_snapshot_from_two_threads(reference, baseline) -> None:
    model, x = reference
    monitor = DriftMonitor(baseline, 60)
    feeds = _feeds(x[:256])
    outputs = model.predict(feeds)
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for _ in range(200):
                monitor.observe(feeds, outputs, now=1.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=feed) for _ in range(2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        snap = monitor.snapshot(1.0)
        assert snap.rows % 256 == 0
    for t in threads:
        t.join()
    assert not errors
    assert monitor.snapshot(1.0).rows == 2 * 200 * 256


def test_window_must_be_positive(baseline) -> None:
    with pytest.raises(ValueError, match="window_s"):
        DriftMonitor(baseline, 0)


def test_the_demo_model_drifts_when_its_inputs_do(demo_model: Path) -> None:
    from stream_infer.tools.demo import demo_split

    model = loaded(demo_model)
    x_train, x_test, _, _ = demo_split()
    base = build_baseline(model, [{"X": x_train.astype(np.float32)}])
    monitor = DriftMonitor(base, 60)
    scaled = x_test * 1.5  # every measurement 50% larger: a unit or calibration change
    feeds = {"X": scaled.astype(np.float32)}
    monitor.observe(feeds, model.predict(feeds), now=1.0)
    snap = monitor.snapshot(1.0)
    assert np.median(list(snap.features.values())) > 0.25
    assert snap.outputs[("label", "0")] > 0.1  # more tumours called benign or malignant


def test_non_finite_outputs_are_left_out_of_the_moments(make_model) -> None:
    from onnx import TensorProto

    model = loaded(make_model("typed", TensorProto.DOUBLE, width=2))
    ref = np.random.default_rng(2).normal(size=(500, 2))
    monitor = DriftMonitor(build_baseline(model, [{"v": ref}]), 60)
    window = np.random.default_rng(3).normal(loc=1.0, size=(300, 2))
    window[::7, 1] = np.nan
    window[5, 1] = np.inf
    outputs = model.predict({"v": window})
    monitor.observe({"v": window}, outputs, now=1.0)
    snap = monitor.snapshot(1.0)
    finite = window[:, 1][np.isfinite(window[:, 1])]
    assert snap.output_mean[("out", "1")] == pytest.approx(finite.mean())
    assert snap.output_std[("out", "1")] == pytest.approx(finite.std())
    assert snap.output_mean[("out", "0")] == pytest.approx(window[:, 0].mean())
    assert all(math.isfinite(v) for v in snap.outputs.values())
