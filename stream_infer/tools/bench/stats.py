"""Figures from raw observations: the catch-up window, latency percentiles, repeats and ratios.

Everything here is a pure function of what the harness recorded, so the method
itself is unit-tested without a broker, and a reader can check a figure in the
JSON against the samples it came from.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "LatencySummary",
    "Sample",
    "Spread",
    "Window",
    "catch_up_window",
    "crossing",
    "ratio_matrix",
]

# The latency histogram's range in microseconds: 1 us to 10 minutes, 3 significant digits.
_HIST_MAX_US = 600_000_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a running contender."""

    t: float  # monotonic seconds
    count: int  # outputs visible in the output topic so far
    cpu_s: float  # the contender process's user + system seconds so far
    rss: int = 0  # its resident set, bytes
    broker_cpu_s: float = math.nan  # the broker's, where the bench started it (NaN elsewhere)


@dataclass(frozen=True, slots=True)
class Window:
    """The stretch between two output counts (10% and 90% of the total, by default)."""

    start: float
    end: float
    events: float
    cpu_s: float
    samples: int  # samples strictly inside the window: the resolution of the figure
    broker_cpu_s: float = math.nan

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        """Events per second inside the window."""
        return self.events / self.seconds

    @property
    def cpu_per_million(self) -> float:
        """The contender's CPU seconds per million events inside the window."""
        return self.cpu_s / self.events * 1e6

    @property
    def broker_cpu_per_million(self) -> float:
        """The broker's CPU seconds per million events inside the window (NaN: not measured)."""
        return self.broker_cpu_s / self.events * 1e6


def crossing(samples: Sequence[Sample], target: float) -> Sample:
    """The moment the count first reached ``target``: its time and CPU counters.

    Linear interpolation between the two samples around the crossing: outputs
    arrive steadily between two looks, so this is finer than the sampling
    interval, and it never needs a sample to fall exactly on the target.
    """
    for i, s in enumerate(samples):
        if s.count >= target:
            if i == 0:
                return s
            prev = samples[i - 1]
            f = (target - prev.count) / (s.count - prev.count)
            return Sample(
                prev.t + f * (s.t - prev.t),
                math.ceil(target),
                prev.cpu_s + f * (s.cpu_s - prev.cpu_s),
                s.rss,
                prev.broker_cpu_s + f * (s.broker_cpu_s - prev.broker_cpu_s),
            )
    raise ValueError(
        f"the count never reached {target:g} (last {samples[-1].count if samples else 0})"
    )


def catch_up_window(
    samples: Sequence[Sample], total: int, lo: float = 0.1, hi: float = 0.9
) -> Window:
    """The window between ``lo`` and ``hi`` of ``total`` outputs.

    Start-up (imports, model load, group join, first fetch) ends before the
    first 10% are out and the tail (the last partitions to drain, the final
    commit) starts after 90%, so neither weighs on the figure.
    """
    if not 0 <= lo < hi <= 1:
        raise ValueError("need 0 <= lo < hi <= 1")
    if any(b.t <= a.t or b.count < a.count for a, b in itertools.pairwise(samples)):
        raise ValueError("samples must move forward in time with counts that never shrink")
    first, last = crossing(samples, lo * total), crossing(samples, hi * total)
    if last.t <= first.t:
        raise ValueError("the window has no duration")
    inside = sum(1 for s in samples if first.t < s.t < last.t)
    return Window(
        first.t,
        last.t,
        (hi - lo) * total,
        last.cpu_s - first.cpu_s,
        inside,
        last.broker_cpu_s - first.broker_cpu_s,
    )


@dataclass(frozen=True, slots=True)
class Spread:
    """One figure over repeats: mean, lowest, highest, standard deviation (0 for one run)."""

    mean: float
    low: float
    high: float
    stdev: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        vals = [v for v in values if not math.isnan(v)]
        if not vals:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(statistics.fmean(vals), min(vals), max(vals), sd, len(vals))

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mean": self.mean,
            "min": self.low,
            "max": self.high,
            "stdev": self.stdev,
            "n": self.n,
        }


def ratio_matrix(figures: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``m[a][b]`` = figure of ``a`` divided by figure of ``b``: "a runs at m x b"."""
    return {
        a: {b: (fa / fb if fb > 0 else math.nan) for b, fb in figures.items()}
        for a, fa in figures.items()
    }


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of event-to-prediction latency, in milliseconds (HdrHistogram, 3 digits)."""

    count: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float

    @classmethod
    def of_micros(cls, values: Iterable[int]) -> LatencySummary:
        from hdrh.histogram import HdrHistogram

        hist = HdrHistogram(1, _HIST_MAX_US, 3)
        for v in values:
            hist.record_value(min(max(int(v), 1), _HIST_MAX_US))
        n = int(hist.get_total_count())
        if n == 0:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)

        def ms(pct: float) -> float:
            return float(hist.get_value_at_percentile(pct)) / 1000.0

        return cls(
            n,
            ms(50),
            ms(90),
            ms(99),
            ms(99.9),
            float(hist.get_max_value()) / 1000.0,
            float(hist.get_mean_value()) / 1000.0,
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50_ms": self.p50,
            "p90_ms": self.p90,
            "p99_ms": self.p99,
            "p999_ms": self.p999,
            "max_ms": self.max,
            "mean_ms": self.mean,
        }
