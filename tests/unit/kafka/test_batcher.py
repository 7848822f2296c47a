"""Batch closing: at size, at the deadline, or at once when no wait is wanted."""

from __future__ import annotations

import time

from stream_infer.kafka.batcher import MicroBatcher
from tests.records import Record


class _Source:
    """A consume function over a fixed backlog that honours (n, timeout) like librdkafka."""

    def __init__(self, backlog: int) -> None:
        self.backlog = list(range(backlog))
        self.calls: list[tuple[int, float]] = []

    def __call__(self, n: int, timeout: float) -> list[int]:
        self.calls.append((n, timeout))
        if len(self.backlog) >= n:
            out, self.backlog = self.backlog[:n], self.backlog[n:]
            return out
        time.sleep(timeout)  # not enough: librdkafka waits out the timeout
        out, self.backlog = self.backlog, []
        return out


def test_closes_at_max_size_without_waiting() -> None:
    src = _Source(1000)
    started = time.monotonic()
    batch = MicroBatcher(src, max_size=100, max_wait_ms=5000).next_batch()
    assert batch == list(range(100))
    assert time.monotonic() - started < 1.0


def test_closes_at_the_deadline_with_what_arrived() -> None:
    src = _Source(7)
    started = time.monotonic()
    batch = MicroBatcher(src, max_size=100, max_wait_ms=50).next_batch()
    elapsed = time.monotonic() - started
    assert batch == list(range(7))
    assert 0.04 <= elapsed < 0.5
    assert all(timeout <= 0.05 + 1e-9 for _, timeout in src.calls)


def test_long_waits_are_sliced_so_a_stop_is_noticed() -> None:
    src = _Source(0)
    stop = {"now": False}

    def stopping() -> bool:
        stop["now"] = True  # asked after the first slice
        return True

    MicroBatcher(src, max_size=10, max_wait_ms=60_000, stopping=stopping).next_batch()
    assert len(src.calls) == 1 and src.calls[0][1] <= 0.25


def test_zero_wait_takes_what_is_there() -> None:
    src = _Source(30)
    batch = MicroBatcher(src, max_size=100, max_wait_ms=0).next_batch()
    assert batch == list(range(30))
    assert src.calls[0] == (1, 0.1)
    assert src.calls[1] == (99, 0)


class _Log:
    """Rebalance log of a consumer whose partition 1 is revoked during the second call."""

    def __init__(self) -> None:
        self.serial = 0
        self.revoked: list[tuple[int, set[tuple[str, int]]]] = []

    def rebalances(self) -> int:
        return self.serial

    def revoked_since(self, serial: int) -> set[tuple[str, int]]:
        return {tp for when, tps in self.revoked if when > serial for tp in tps}


def test_records_fetched_before_their_partition_was_revoked_are_dropped() -> None:
    log = _Log()
    calls = {"n": 0}

    def consume(n: int, timeout: float) -> list[Record]:
        calls["n"] += 1
        if calls["n"] == 1:
            return [Record(10, 0, "t"), Record(20, 1, "t")]
        if calls["n"] > 2:
            return []
        log.serial += 1  # a revoke of partition 1 runs inside this call ...
        log.revoked.append((log.serial, {("t", 1)}))
        return [
            Record(11, 0, "t"),
            Record(5, 1, "t"),
        ]  # ... then a fresh assignment restarts it at 5

    batch = MicroBatcher(consume, max_size=4, max_wait_ms=50, rebalances=log).next_batch()
    assert [(r.partition(), r.offset()) for r in batch] == [(0, 10), (0, 11), (1, 5)]


def test_batch_size_follows_the_latency_target_from_measured_calls() -> None:
    from stream_infer.kafka.batcher import BatchSizer

    sizer = BatchSizer(max_size=512, target_s=0.050)
    assert sizer.size == 512  # nothing measured yet
    # A model costing 2 ms per call plus 0.5 ms per row: 50 ms fit (50 - 2) / 0.5 = 96 rows.
    for rows in (512, 200, 96, 96, 150, 64):
        sizer.observe(rows, 0.002 + 0.0005 * rows)
    assert sizer.size == 96
    # The machine gets twice as slow: the size halves (within the rounding of the fit).
    for rows in (96, 48, 48, 60, 40) * 20:
        sizer.observe(rows, 2 * (0.002 + 0.0005 * rows))
    assert sizer.size == 46  # (50 - 4) / 1


def test_batch_size_stays_within_bounds_and_is_off_without_a_target() -> None:
    from stream_infer.kafka.batcher import BatchSizer

    fast = BatchSizer(max_size=512, target_s=0.050)
    for rows in (512, 256, 128):
        fast.observe(rows, 0.0001 + 1e-7 * rows)  # a tiny model: the budget holds 512 easily
    assert fast.size == 512
    slow = BatchSizer(max_size=512, target_s=0.050)
    for rows in (512, 1, 2):
        slow.observe(rows, 0.2 * rows)  # one row already costs more than the budget
    assert slow.size == 1
    off = BatchSizer(max_size=300, target_s=None)
    off.observe(300, 10.0)
    assert off.size == 300
