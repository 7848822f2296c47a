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

__all__ = ["MicroBatcher"]

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
