"""Closing a micro-batch at ``max_batch_size`` rows or ``max_wait_ms``, whichever comes first.

librdkafka's batch consume already waits for "n messages or the timeout"; this
room owns the deadline, so that a call cut short (a rebalance, an error event)
tops the batch up with the time that is left instead of restarting the clock,
and so that a long ``max_wait_ms`` is waited in slices that notice a shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["BatchSizer", "MicroBatcher"]

ConsumeFn = Callable[[int, float], list[Any]]


class RebalanceLog(Protocol):
    def rebalances(self) -> int: ...
    def revoked_since(self, serial: int) -> set[tuple[str, int]]: ...


_SLICE_S = 0.25  # longest single wait, so a stop request is seen within it
_IDLE_S = 0.1  # with max_wait_ms=0: how long to wait for the first record


class MicroBatcher:
    def __init__(
        self,
        consume: ConsumeFn,
        max_size: int,
        max_wait_ms: int,
        stopping: Callable[[], bool] = lambda: False,
        rebalances: RebalanceLog | None = None,
    ) -> None:
        self._consume = consume
        self._stopping = stopping
        self._rebalances = rebalances
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0

    def next_batch(self) -> list[Any]:
        """One batch: full, or whatever arrived within ``max_wait_ms`` (possibly nothing)."""
        size, consume = self.max_size, self._consume
        if self.max_wait <= 0:
            # No batching delay wanted: block for the first record only, then
            # take whatever else is already fetched.
            batch = consume(1, _IDLE_S)
            if batch and size > 1:
                batch = self._extend(batch, size - 1, 0.0)
            return batch
        deadline = time.monotonic() + self.max_wait
        batch = []
        while len(batch) < size:
            left = deadline - time.monotonic()
            if left <= 0.0005 or (batch and self._stopping()):
                break
            batch = self._extend(batch, size - len(batch), min(left, _SLICE_S))
            if self._stopping():
                break
        return batch

    def _extend(self, batch: list[Any], n: int, timeout: float) -> list[Any]:
        """``batch`` plus what one more consume call brings.

        If partitions changed hands during that call, records fetched earlier
        for a revoked partition are dropped: they now belong to a new owner (or
        to our own next assignment, which restarts from the committed offset),
        and tracking them would let a commit skip over work still in flight.
        """
        log = self._rebalances
        before = log.rebalances() if log is not None else 0
        more = self._consume(n, timeout)
        if log is not None and batch and log.rebalances() != before:
            revoked = log.revoked_since(before)
            if revoked:
                batch = [m for m in batch if (m.topic(), m.partition()) not in revoked]
        batch.extend(more)
        return batch


class BatchSizer:
    """The largest batch whose model call fits a latency budget, learnt as the worker runs.

    A model call costs about ``a + b * rows`` seconds: a fixed part (the call,
    kernel launches, on a GPU the copies) and a part per row. Both are fitted
    by least squares over the last calls (a sliding window, so a model that
    warms up or a machine that gets busier is followed), and the size is the
    largest ``rows`` with ``a + b * rows <= target``, within ``[1, max_size]``.
    While only one batch size has been seen, its whole cost is taken as per
    row: a cautious first guess that the next, smaller calls correct.
    """

    def __init__(self, max_size: int, target_s: float | None, window: int = 64) -> None:
        self.max_size = max_size
        self.target_s = target_s
        self._window = window
        self._seen: list[tuple[int, float]] = []
        self.size = max_size

    def observe(self, rows: int, seconds: float) -> None:
        """One model call (any thread: a lost race only delays the next fit)."""
        if self.target_s is None or rows <= 0:
            return
        seen = self._seen
        seen.append((rows, seconds))
        if len(seen) > self._window:
            del seen[: len(seen) - self._window]
        self.size = self._fit(seen)

    def _fit(self, seen: list[tuple[int, float]]) -> int:
        target = self.target_s
        assert target is not None
        n = len(seen)
        mean_x = sum(r for r, _ in seen) / n
        mean_y = sum(s for _, s in seen) / n
        var = sum((r - mean_x) ** 2 for r, _ in seen)
        if var == 0:  # one size only: assume the cost is all per row
            per_row, fixed = mean_y / mean_x, 0.0
        else:
            per_row = sum((r - mean_x) * (s - mean_y) for r, s in seen) / var
            fixed = max(0.0, mean_y - per_row * mean_x)
        if per_row <= 0:
            return self.max_size  # cost does not grow with rows: batch fully
        return max(1, min(self.max_size, int((target - fixed) / per_row + 1e-9)))
