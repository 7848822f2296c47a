"""Closing a micro-batch at ``max_batch_size`` rows or ``max_wait_ms``, whichever comes first.

librdkafka's batch consume already waits for "n messages or the timeout"; this
room owns the deadline, so that a call cut short (a rebalance, an error event)
tops the batch up with the time that is left instead of restarting the clock,
and so that a long ``max_wait_ms`` is waited in slices that notice a shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["MicroBatcher"]

ConsumeFn = Callable[[int, float], list[Any]]

_SLICE_S = 0.25  # longest single wait, so a stop request is seen within it
_IDLE_S = 0.1  # with max_wait_ms=0: how long to wait for the first record


class MicroBatcher:
    def __init__(
        self,
        consume: ConsumeFn,
        max_size: int,
        max_wait_ms: int,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._consume = consume
        self._stopping = stopping
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0

    def next_batch(self) -> list[Any]:
        """One batch: full, or whatever arrived within ``max_wait_ms`` (possibly nothing)."""
        size, consume = self.max_size, self._consume
        if self.max_wait <= 0:
            # No batching delay wanted: block for the first record only, then
            # take whatever else is already fetched.
            first = consume(1, _IDLE_S)
            if first and size > 1:
                first.extend(consume(size - 1, 0))
            return first
        deadline = time.monotonic() + self.max_wait
        batch: list[Any] = []
        while len(batch) < size:
            left = deadline - time.monotonic()
            if left <= 0.0005 or (batch and self._stopping()):
                break
            batch.extend(consume(size - len(batch), min(left, _SLICE_S)))
            if self._stopping():
                break
        return batch
