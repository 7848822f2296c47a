"""The catch-up window, latency percentiles, spreads and ratios, on hand-built observations."""

from __future__ import annotations

import math

import pytest

from stream_infer.tools.bench.stats import (
    LatencySummary,
    Sample,
    Spread,
    catch_up_window,
    crossing,
    ratio_matrix,
)


def test_crossing_interpolates_between_the_samples_around_the_target() -> None:
    samples = [Sample(0.0, 0, 0.0, 0, 10.0), Sample(1.0, 100, 2.0, 0, 11.0)]
    samples.append(Sample(2.0, 300, 3.0, 0, 15.0))

    def at(target: float) -> tuple[float, float, float]:
        point = crossing(samples, target)
        return point.t, point.cpu_s, point.broker_cpu_s

    assert at(200) == pytest.approx((1.5, 2.5, 13.0))
    assert at(100) == pytest.approx((1.0, 2.0, 11.0))
    assert at(0) == pytest.approx((0.0, 0.0, 10.0))
    with pytest.raises(ValueError, match="never reached 301"):
        crossing(samples, 301)


def _run(startup_s: float, rate: float, total: int, step_s: float = 0.013) -> list[Sample]:
    """A contender that outputs nothing for ``startup_s``, then ``rate``/s until ``total``.

    CPU: 1.5 s of start-up, then 0.4 ms per event; the tail after 95% runs at a tenth of
    the rate (a slow last partition).
    """
    samples, t, count = [], 0.0, 0.0
    while count < total:
        samples.append(Sample(t, int(count), 1.5 * min(t, startup_s) / startup_s + count * 4e-4))
        t += step_s
        if t > startup_s:
            count = min(total, count + rate * step_s * (0.1 if count >= 0.95 * total else 1.0))
    samples.append(Sample(t, total, 1.5 + total * 4e-4))
    return samples


def test_the_window_leaves_out_start_up_and_tail() -> None:
    window = catch_up_window(_run(startup_s=3.0, rate=20_000, total=100_000), 100_000)
    assert window.events == 80_000
    # Integer counts in the samples cost at most one event at each end.
    assert window.rate == pytest.approx(20_000, rel=1e-3)
    assert window.seconds == pytest.approx(4.0, rel=1e-3)
    assert window.cpu_per_million == pytest.approx(400.0, rel=1e-3)  # no start-up CPU in it
    assert window.samples == pytest.approx(4.0 / 0.013, abs=2)
    assert math.isnan(window.broker_cpu_per_million)  # no broker figures in these samples


def test_the_broker_cpu_in_the_window_is_per_million_events() -> None:
    samples = [Sample(0.0, 0, 0.0, 0, 100.0), Sample(1.0, 10_000, 1.0, 0, 100.5)]
    samples.append(Sample(2.0, 20_000, 2.0, 0, 101.5))
    window = catch_up_window(samples, 20_000)
    # 2,000 -> 18,000 events: broker CPU 100.1 -> 101.3 s, 1.2 s for 16,000 events.
    assert window.broker_cpu_per_million == pytest.approx(1.2 / 16_000 * 1e6)


def test_a_window_between_two_samples_still_has_a_rate() -> None:
    samples = [Sample(0.0, 0, 0.0), Sample(0.5, 0, 0.1), Sample(0.6, 1000, 0.3)]
    window = catch_up_window(samples, 1000)
    assert window.rate == pytest.approx(10_000)
    assert window.samples == 0


def test_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="move forward"):
        catch_up_window([Sample(1.0, 0, 0.0), Sample(1.0, 10, 0.0)], 10)
    with pytest.raises(ValueError, match="move forward"):
        catch_up_window([Sample(1.0, 5, 0.0), Sample(2.0, 4, 0.0)], 10)
    with pytest.raises(ValueError, match="never reached"):
        catch_up_window([Sample(0.0, 0, 0.0), Sample(1.0, 80, 0.0)], 100)


def test_latency_percentiles_from_the_histogram() -> None:
    # 1 ms .. 1000 ms, one of each: the p-th percentile is p% of a second.
    summary = LatencySummary.of_micros(ms * 1000 for ms in range(1, 1001))
    assert summary.count == 1000
    assert summary.p50 == pytest.approx(500, rel=2e-3)
    assert summary.p99 == pytest.approx(990, rel=2e-3)
    assert summary.p999 == pytest.approx(999, rel=2e-3)
    assert summary.max == pytest.approx(1000, rel=2e-3)
    assert summary.mean == pytest.approx(500.5, rel=2e-3)
    assert summary.p50 <= summary.p90 <= summary.p99 <= summary.p999 <= summary.max


def test_latency_of_nothing_is_said_to_be_nothing() -> None:
    summary = LatencySummary.of_micros([])
    assert summary.count == 0 and math.isnan(summary.p99)


def test_spread_over_repeats() -> None:
    s = Spread.of([3.0, 1.0, 2.0, math.nan])  # a failed run (nan) is left out
    assert (s.mean, s.low, s.high, s.stdev, s.n) == (2.0, 1.0, 3.0, 1.0, 3)
    assert Spread.of([5.0]).stdev == 0.0
    assert Spread.of([]).n == 0


def test_ratio_matrix_reads_row_over_column() -> None:
    m = ratio_matrix({"a": 10.0, "b": 4.0, "c": 0.0})
    assert m["a"]["b"] == 2.5 and m["b"]["a"] == 0.4 and m["a"]["a"] == 1.0
    assert math.isnan(m["a"]["c"])


def test_delivered_rate_tells_a_contender_that_kept_up_from_one_that_did_not() -> None:
    import numpy as np

    from stream_infer.tools.bench.latency import delivered_rate

    due = np.arange(0, 10_000, 10, dtype=np.int64)  # 100/s for 10 s
    steady = np.full(len(due), 20_000, dtype=np.int64)  # always 20 ms late
    assert delivered_rate(due, steady) == pytest.approx(100.0, rel=2e-3)
    # Each output 10 ms later than the one before on top: received over 20 s, 50/s.
    falling_behind = steady + np.arange(len(due), dtype=np.int64) * 10_000
    assert delivered_rate(due, falling_behind) == pytest.approx(50.0, rel=2e-3)
    assert delivered_rate(due[:1], steady[:1]) == 0.0
