"""How many replicas the group needs: from the input rate, one replica's capacity and the lag.

A lag threshold alone scales on the size of the backlog, not on the traffic:
a group that only just keeps up shows no lag and gets scaled in, falls
behind, gets scaled out, and so on. Here the rate that arrives and the rate
one replica can process are both measured, so the answer is right the first
time:

    desired = ceil((input_rate + lag / drain_target_s) / (capacity * target_utilization))

clamped to ``[1, partitions]`` (a replica beyond the partition count would
sit idle). ``capacity`` is what this replica processes per second of *busy*
time, so it is known even while the replica is mostly idle (see
:class:`CapacityMeter`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["CapacityMeter", "RateMeter", "desired_replicas"]


def desired_replicas(
    *,
    input_rate: float,
    lag: int,
    capacity: float | None,
    partitions: int,
    members: int,
    drain_target_s: float,
    target_utilization: float,
) -> int:
    """Replicas that keep up with ``input_rate`` and drain ``lag`` within ``drain_target_s``.

    Without a capacity measurement yet (a replica that has not processed
    anything), the current member count is kept: guessing would make the
    autoscaler act on noise.
    """
    ceiling = max(1, partitions)
    if capacity is None or capacity <= 0:
        return min(ceiling, max(1, members))
    needed = (max(0.0, input_rate) + max(0, lag) / drain_target_s) / (capacity * target_utilization)
    return min(ceiling, max(1, math.ceil(needed - 1e-9)))


class RateMeter:
    """Events per second from a growing total (e.g. the sum of high watermarks), over a window.

    The rate is taken between the oldest and the newest sample in the window,
    so one late refresh does not make it jump.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, total: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        samples = self._samples
        if samples and total < samples[-1][1]:
            samples.clear()  # a topic was recreated or truncated: start over
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass
class _Interval:
    started: float
    rows: int = 0
    loop_idle_s: float = 0.0
    infer_busy_s: float = 0.0


class CapacityMeter:
    """Events per second this replica could process if it never waited for input.

    Two threads can be the bottleneck: the loop (decoding, producing) and the
    inference thread. Over each interval the loop's utilization is the time it
    did *not* spend blocked waiting for records, the inference thread's is the
    time inside the model; capacity is rows divided by the busier of the two.
    Intervals where both were nearly idle say little about capacity and are
    skipped; the estimate is an exponential average of the rest.
    """

    _MIN_UTILIZATION = 0.05
    _SMOOTHING = 0.3

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._current = _Interval(time.monotonic())
        self.capacity: float | None = None

    def add(self, rows: int = 0, loop_idle_s: float = 0.0, infer_busy_s: float = 0.0) -> None:
        """Account work; called from either thread (plain float adds: a lost race costs little)."""
        cur = self._current
        cur.rows += rows
        cur.loop_idle_s += loop_idle_s
        cur.infer_busy_s += infer_busy_s

    def roll(self, now: float | None = None) -> float | None:
        """Close the interval when it is due; returns the current estimate."""
        now = time.monotonic() if now is None else now
        cur = self._current
        span = now - cur.started
        if span < self.interval_s:
            return self.capacity
        self._current = _Interval(now)
        loop_busy = max(0.0, span - cur.loop_idle_s) / span
        infer_busy = min(1.0, cur.infer_busy_s / span)
        utilization = max(loop_busy, infer_busy)
        if cur.rows and utilization >= self._MIN_UTILIZATION:
            measured = cur.rows / (span * utilization)
            prev = self.capacity
            self.capacity = measured if prev is None else prev + self._SMOOTHING * (measured - prev)
        return self.capacity
