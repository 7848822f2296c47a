"""What dlq replay does with one dead letter: filters, parking, skips, the replayed headers."""

from __future__ import annotations

from typing import Any

import pytest

from stream_infer.tools.replay_rules import (
    Filters,
    Report,
    decide,
    parse_offset_bounds,
    parse_time,
)
from tests.records import Record

DLQ = "events.dlq"


def _dead(offset: int = 0, partition: int = 0, **dlq: Any) -> Record:
    headers: dict[str, Any] = {
        "dlq.original.topic": "events",
        "dlq.original.partition": "2",
        "dlq.original.offset": "42",
        "dlq.error.stage": "inference",
        "dlq.error.class": "InvalidArgument",
        "dlq.failed.at": "1764000000000",
    }
    headers.update({f"dlq.{k.replace('_', '.')}": v for k, v in dlq.items()})
    return Record(
        offset,
        partition,
        topic_=DLQ,
        headers_=[
            ("trace", b"abc"),
            *((k, v.encode()) for k, v in headers.items() if v is not None),
        ],
    )


def _decide(record: Record, filters: Filters | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "max_replays": 3,
        "skip_unmatched": False,
        "dead_letter_topic": DLQ,
        "partitions_of": {"events": 6, "small": 1}.get,
    }
    args.update(kw)
    return decide(record, filters or Filters(), **args)


def test_times_are_epoch_ms_or_iso_8601() -> None:
    assert parse_time("1764000000000") == 1_764_000_000_000
    assert parse_time("2025-11-24T16:00:00Z") == 1_764_000_000_000
    assert parse_time("2025-11-24T17:00:00+01:00") == 1_764_000_000_000
    assert parse_time("2025-11-24T16:00:00") == 1_764_000_000_000  # no offset: UTC
    with pytest.raises(ValueError, match="neither epoch milliseconds nor an ISO-8601"):
        parse_time("yesterday")


def test_offset_bounds_for_all_or_one_partition() -> None:
    assert parse_offset_bounds(["10", "2:30"]) == {None: 10, 2: 30}
    f = Filters(from_offsets={None: 10, 2: 30}, to_offsets={1: 50})
    assert (f.bounds(0), f.bounds(1), f.bounds(2)) == ((10, None), (10, 50), (30, None))
    for bad, words in (("x", "not OFFSET"), ("-1", "not negative"), ("1:2:3", "not OFFSET")):
        with pytest.raises(ValueError, match=words):
            parse_offset_bounds([bad])
    with pytest.raises(ValueError, match="already given"):
        parse_offset_bounds(["1:5", "1:6"])


def test_a_replayed_event_keeps_its_own_headers_and_counts_the_replay() -> None:
    decision = _decide(_dead(replay_count="1"))
    assert decision.kind == "replay"
    assert (decision.topic, decision.partition) == ("events", 2)
    assert decision.headers == [("trace", b"abc"), ("dlq.replay.count", b"2")]
    first = _decide(_dead())
    assert first.headers[-1] == ("dlq.replay.count", b"1")


def test_a_partition_that_is_gone_leaves_the_choice_to_the_partitioner() -> None:
    assert _decide(_dead(original_topic="small")).partition is None
    assert _decide(_dead(original_partition="x")).partition is None


@pytest.mark.parametrize(
    ("filters", "record", "selected"),
    [
        (Filters(stages=frozenset({"inference"})), _dead(), True),
        (Filters(stages=frozenset({"validate", "decode"})), _dead(), False),
        (Filters(error_classes=frozenset({"InvalidArgument"})), _dead(), True),
        (Filters(error_classes=frozenset({"Fail"})), _dead(), False),
        (Filters(from_offsets={None: 5}), _dead(offset=5), True),
        (Filters(from_offsets={None: 5}), _dead(offset=4), False),
        (Filters(from_offsets={1: 5}), _dead(offset=4), True),  # another partition's bound
        (Filters(to_offsets={None: 5}), _dead(offset=5), True),
        (Filters(to_offsets={None: 5}), _dead(offset=6), False),
        (Filters(since_ms=1_764_000_000_000), _dead(), True),
        (Filters(since_ms=1_764_000_000_001), _dead(), False),
        (Filters(until_ms=1_764_000_000_000), _dead(), False),
        (Filters(until_ms=1_764_000_000_001), _dead(), True),
        (Filters(since_ms=0), _dead(failed_at=None), False),
    ],
)
def test_filters(filters: Filters, record: Record, selected: bool) -> None:
    held = _decide(record, filters)
    assert (held.kind == "replay") is selected
    if not selected:
        assert (held.kind, held.reason) == ("hold", "unmatched")
        assert _decide(record, filters, skip_unmatched=True).kind == "skip"


@pytest.mark.parametrize(
    ("record", "kind", "reason"),
    [
        (_dead(original_topic=None), "skip", "no dlq.original.topic"),
        (_dead(original_topic=""), "skip", "no dlq.original.topic"),
        (_dead(original_topic="gone"), "hold", "unknown topic 'gone'"),
        (_dead(original_topic=DLQ), "skip", "original topic is the dead-letter topic"),
        (_dead(value_truncated="true"), "skip", "truncated stub (dlq.value.truncated)"),
        (_dead(replay_count="two"), "skip", "bad dlq.replay.count"),
        (_dead(replay_count="3"), "park", "dlq.replay.count reached 3"),
        (_dead(replay_count="7", original_topic="gone"), "park", "dlq.replay.count reached 3"),
    ],
)
def test_what_cannot_be_replayed(record: Record, kind: str, reason: str) -> None:
    decision = _decide(record)
    assert (decision.kind, decision.reason) == (kind, reason)


def test_report_summary_and_listing() -> None:
    report = Report()
    for i in range(5):
        report.add(_dead(offset=i), _decide(_dead(offset=i)))
    parked = _dead(offset=5, error_class="Fail", replay_count="3")
    orphan = _dead(offset=6, original_topic=None)
    unmatched = _dead(offset=7)
    report.add(parked, _decide(parked))
    report.add(orphan, _decide(orphan))
    report.add(unmatched, _decide(unmatched, Filters(stages=frozenset({"decode"}))))
    assert report.summary() == (
        "replayed 5, parked 1, skipped 2 (no dlq.original.topic: 1, unmatched: 1); "
        "1 held for a later run"
    )
    assert report.summary(dry_run=True).startswith("dry run: would replay 5, park 1, skip 2")
    listing = report.listing()
    assert listing[0] == "would replay 5:"
    assert listing[1] == (
        "  inference InvalidArgument: 5  e.g. events.dlq[0]@0 <- events[2]@42, "
        "events.dlq[0]@1 <- events[2]@42, events.dlq[0]@2 <- events[2]@42"
    )
    assert "would park 1:" in listing
    assert "  inference Fail: 1  e.g. events.dlq[0]@5 <- events[2]@42" in listing
    assert "would skip 2:" in listing
    assert "  no dlq.original.topic: 1  e.g. events.dlq[0]@6" in listing
