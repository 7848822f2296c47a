"""Replay progress: what is done, what is held, and how it round-trips through commit metadata."""

from __future__ import annotations

import pytest

from stream_infer.tools.replay_progress import METADATA_BUDGET, PartitionProgress


def _scan(progress: PartitionProgress, held: set[int], offsets: range) -> None:
    for offset in offsets:
        if offset in held:
            assert progress.hold(offset)
        else:
            progress.settle(offset)


def test_the_committed_offset_stops_at_the_first_held_record() -> None:
    progress = PartitionProgress(10)
    _scan(progress, {12, 13, 17}, range(10, 20))
    assert progress.frontier == 20
    assert progress.held == [[12, 14], [17, 18]]
    assert progress.committed() == 12
    assert progress.held_count() == 3
    assert [o for o in range(10, 21) if progress.is_done(o)] == [10, 11, 14, 15, 16, 18, 19]


def test_settling_held_records_moves_the_committed_offset() -> None:
    progress = PartitionProgress(0, [[2, 6], [9, 10]])
    progress.frontier = 12
    progress.settle(3)
    assert progress.held == [[2, 3], [4, 6], [9, 10]]
    progress.settle(2)
    assert progress.committed() == 4
    for offset in (4, 5, 9):
        progress.settle(offset)
    assert progress.held == []
    assert progress.committed() == 12


def test_consecutive_held_records_share_a_range_across_offset_gaps() -> None:
    # Offsets 3 and 4 hold transaction markers: no record is read there.
    progress = PartitionProgress(0)
    for offset in (0, 1, 2, 5, 6):
        assert progress.hold(offset)
    assert progress.held == [[0, 7]]


def test_end_of_partition_moves_only_the_frontier() -> None:
    progress = PartitionProgress(0)
    progress.hold(0)
    progress.reach(5)
    progress.reach(3)
    assert (progress.frontier, progress.committed()) == (5, 0)


def test_metadata_round_trip() -> None:
    progress = PartitionProgress(100)
    _scan(progress, {100, 101, 105, 150}, range(100, 200))
    text = progress.encode()
    assert text.startswith("sir1;100;100;")
    back, warning = PartitionProgress.decode(progress.committed(), text, low=0)
    assert warning is None
    assert (back.frontier, back.held) == (200, [[100, 102], [105, 106], [150, 151]])


def test_no_commit_starts_at_the_first_retained_offset() -> None:
    progress, warning = PartitionProgress.decode(-1001, None, low=42)
    assert (progress.frontier, progress.held, warning) == (42, [], None)


def test_records_deleted_by_retention_are_no_longer_held() -> None:
    progress = PartitionProgress(0)
    _scan(progress, {1, 2, 3, 8}, range(10))
    back, _ = PartitionProgress.decode(1, progress.encode(), low=3)
    assert back.held == [[3, 4], [8, 9]]
    assert back.committed() == 3
    gone, _ = PartitionProgress.decode(1, progress.encode(), low=50)
    assert (gone.frontier, gone.held) == (50, [])


@pytest.mark.parametrize(
    ("committed", "metadata", "words"),
    [
        (7, "", None),  # set by Kafka's own tools: the offset alone
        (7, "something else", "not replay progress"),
        (7, "sir1;7;x;", "not replay progress"),
        (7, "sir1;7;3;0.9", "not replay progress"),  # a range past the frontier
        (9, "sir1;7;3;0.1", "moved outside dlq replay"),
    ],
)
def test_foreign_or_stale_metadata_falls_back_to_the_offset(
    committed: int, metadata: str, words: str | None
) -> None:
    progress, warning = PartitionProgress.decode(committed, metadata, low=0)
    assert (progress.frontier, progress.held) == (committed, [])
    assert (warning is None) if words is None else (words in str(warning))


def test_hold_refuses_once_the_metadata_budget_is_spent() -> None:
    progress = PartitionProgress(0)
    offset = 0
    while progress.hold(offset):
        progress.settle(offset + 1)  # every other record held: one range each
        offset += 2
        assert offset < 10_000, "the budget never ran out"
    before = (progress.frontier, [r[:] for r in progress.held])
    assert len(progress.encode()) <= METADATA_BUDGET
    assert not progress.hold(offset)  # still refused, and nothing changed
    assert (progress.frontier, progress.held) == before
    assert progress.held_count() > 500
