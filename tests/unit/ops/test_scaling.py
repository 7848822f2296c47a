"""Desired replicas, input rate and capacity: the arithmetic the autoscaler trusts."""

from __future__ import annotations

import pytest

from stream_infer.ops.scaling import CapacityMeter, RateMeter, desired_replicas


def _desired(**kw: object) -> int:
    args: dict[str, object] = {
        "input_rate": 0.0,
        "lag": 0,
        "capacity": 1000.0,
        "partitions": 12,
        "members": 2,
        "drain_target_s": 100.0,
        "target_utilization": 1.0,
    }
    args.update(kw)
    return desired_replicas(**args)  # type: ignore[arg-type]


def test_keeping_up_needs_rate_over_capacity_rounded_up() -> None:
    assert _desired(input_rate=2500.0) == 3  # 2.5 replicas' worth of traffic
    assert _desired(input_rate=3000.0) == 3  # exactly three, not four
    assert _desired(input_rate=3000.0, target_utilization=0.8) == 4  # 3.75 with headroom


def test_lag_adds_what_drains_it_within_the_target() -> None:
    # 200,000 behind, 100 s to drain: 2,000/s more on top of the 1,000/s arriving.
    assert _desired(input_rate=1000.0, lag=200_000) == 3


def test_idle_group_keeps_one_replica_and_partitions_cap_the_rest() -> None:
    assert _desired() == 1
    assert _desired(input_rate=1e9, partitions=6) == 6
    assert _desired(input_rate=1e9, partitions=0) == 1


def test_unknown_capacity_keeps_the_current_count() -> None:
    assert _desired(capacity=None, input_rate=5000.0, members=4) == 4
    assert _desired(capacity=None, members=0) == 1


def test_rate_meter_measures_over_its_window() -> None:
    meter = RateMeter(window_s=10)
    assert meter.rate() == 0.0
    for t in range(0, 31):
        meter.add(total=100.0 * t, now=float(t))  # 100 events/s
    assert meter.rate() == pytest.approx(100.0)
    meter.add(total=100.0 * 30 + 5000, now=31.0)  # a burst of 5,000 in the last second
    # The window (about 10 s) spreads the burst: 100/s plus 5000/~10 s.
    assert 500 < meter.rate() < 700


def test_rate_meter_starts_over_when_totals_shrink() -> None:
    meter = RateMeter(window_s=10)
    meter.add(1000.0, now=0.0)
    meter.add(2000.0, now=1.0)
    meter.add(10.0, now=2.0)  # topic recreated
    assert meter.rate() == 0.0


def test_capacity_is_rows_over_the_busier_threads_time() -> None:
    meter = CapacityMeter(interval_s=10)
    meter._current.started = 0.0
    # 10 s: 5,000 rows; the loop waited 8 s for input; the model was busy 1 s.
    meter.add(rows=5000, loop_idle_s=8.0, infer_busy_s=1.0)
    assert meter.roll(now=10.0) == pytest.approx(5000 / 2.0)  # loop busy 2 s of 10
    # Next 10 s the model is the bottleneck: busy 9 s for 3,000 rows, the loop mostly idle.
    meter.add(rows=3000, loop_idle_s=9.5, infer_busy_s=9.0)
    expected = 2500 + 0.3 * (3000 / 9.0 - 2500)  # smoothed towards the new measurement
    assert meter.roll(now=20.0) == pytest.approx(expected)


def test_capacity_ignores_nearly_idle_intervals() -> None:
    meter = CapacityMeter(interval_s=10)
    meter._current.started = 0.0
    meter.add(rows=3, loop_idle_s=9.99, infer_busy_s=0.001)
    assert meter.roll(now=10.0) is None
    meter.add(rows=100)  # not due yet: the estimate stands
    assert meter.roll(now=15.0) is None
