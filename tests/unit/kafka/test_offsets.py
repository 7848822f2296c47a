"""The commit rule: a partition moves only past batches that are fully acknowledged, in order."""

from __future__ import annotations

from stream_infer.kafka.offsets import Batch, OffsetTracker
from tests.records import Record


def _batch(seq: int, *records: tuple[str, int, int]) -> Batch:
    return Batch(seq, [Record(o, p, t) for t, p, o in records])


def _ack_all(batch: Batch) -> None:
    batch.pending = 0


def test_batch_knows_its_rows_and_last_offsets() -> None:
    b = _batch(1, ("t", 0, 5), ("t", 1, 9), ("t", 0, 6))
    assert b.pending == 3 and not b.done
    assert b.positions == {("t", 0): 6, ("t", 1): 9}


def test_commit_waits_for_earlier_batches_of_the_same_partition() -> None:
    tr = OffsetTracker()
    tr.assign([("t", 0), ("t", 1)])
    first = _batch(1, ("t", 0, 10), ("t", 0, 11))
    second = _batch(2, ("t", 0, 12), ("t", 1, 3))
    tr.open(first)
    tr.open(second)
    _ack_all(second)  # acknowledged out of order
    assert tr.to_commit() == {("t", 1): 4}  # partition 1 is not held back by batch 1
    tr.sent({("t", 1): 4})
    assert tr.to_commit() == {}
    first.pending -= 1
    assert tr.to_commit() == {}  # one row of batch 1 still outstanding
    first.pending -= 1
    assert tr.to_commit() == {("t", 0): 13}
    assert tr.in_flight() == 0


def test_nothing_is_committed_for_a_failed_batch() -> None:
    tr = OffsetTracker()
    tr.assign([("t", 0)])
    ok, stuck, later = _batch(1, ("t", 0, 0)), _batch(2, ("t", 0, 1)), _batch(3, ("t", 0, 2))
    for b in (ok, stuck, later):
        tr.open(b)
    _ack_all(ok)
    _ack_all(later)
    assert tr.to_commit() == {("t", 0): 1}
    assert tr.in_flight() == 1


def test_unowned_partitions_are_never_committed() -> None:
    tr = OffsetTracker()
    tr.assign([("t", 0)])
    b = _batch(1, ("t", 0, 4), ("t", 5, 8))
    tr.open(b)
    _ack_all(b)
    assert tr.to_commit() == {("t", 0): 5}


def test_forget_drops_a_revoked_partition() -> None:
    tr = OffsetTracker()
    tr.assign([("t", 0), ("t", 1)])
    b = _batch(1, ("t", 0, 1), ("t", 1, 1))
    tr.open(b)
    tr.forget([("t", 1)])
    _ack_all(b)
    assert tr.to_commit() == {("t", 0): 2}
    assert tr.owned == {("t", 0)}


def test_failed_commit_is_offered_again() -> None:
    tr = OffsetTracker()
    tr.assign([("t", 0)])
    b = _batch(1, ("t", 0, 7))
    tr.open(b)
    _ack_all(b)
    tr.sent(tr.to_commit())
    assert tr.to_commit() == {}
    tr.failed([("t", 0)])
    assert tr.to_commit() == {("t", 0): 8}


def test_commit_for_selected_partitions_only() -> None:
    tr = OffsetTracker()
    tr.assign([("t", 0), ("t", 1)])
    b = _batch(1, ("t", 0, 1), ("t", 1, 2))
    tr.open(b)
    _ack_all(b)
    assert tr.to_commit([("t", 1)]) == {("t", 1): 3}


def test_in_flight_counts_open_batches() -> None:
    tr = OffsetTracker()
    batches = [_batch(i, ("t", 0, i)) for i in range(4)]
    for b in batches:
        tr.open(b)
    assert tr.in_flight() == 4
    _ack_all(batches[2])
    assert tr.in_flight() == 3
    _ack_all(batches[0])
    _ack_all(batches[1])
    assert tr.in_flight() == 1
