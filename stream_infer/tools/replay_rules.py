"""What ``dlq replay`` does with one dead letter: its options, the decision, the final report.

Pure functions of a record's headers and the options: no Kafka client in
here, so every rule is tested without a broker. The driver (``replay.py``)
reads the records, asks :func:`decide`, and produces what it is told to.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from stream_infer.errors import Stage
from stream_infer.inference.envelope import REPLAY_COUNT_HEADER, Headers, SourceRecord
from stream_infer.logging import where

__all__ = [
    "STAGES",
    "Decision",
    "Filters",
    "ReplayOptions",
    "Report",
    "decide",
    "parse_offset_bounds",
    "parse_time",
]

STAGES: tuple[str, ...] = get_args(Stage)
_EXAMPLES = 3
UNMATCHED = "unmatched"

Kind = Literal["replay", "park", "skip", "hold"]


def parse_time(text: str) -> int:
    """Epoch milliseconds from digits, or from ISO-8601 (UTC when no offset is given)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"'{text}' is neither epoch milliseconds nor an ISO-8601 time "
            "(e.g. 2025-11-24T09:30:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_offset_bounds(values: Sequence[str]) -> dict[int | None, int]:
    """``N`` (every partition) or ``P:N`` (partition P only); a partition's own bound wins."""
    bounds: dict[int | None, int] = {}
    for text in values:
        head, sep, tail = text.strip().rpartition(":")
        try:
            partition = int(head) if sep else None
            offset = int(tail)
        except ValueError:
            raise ValueError(f"'{text}' is not OFFSET or PARTITION:OFFSET") from None
        if offset < 0 or (partition is not None and partition < 0):
            raise ValueError(f"'{text}': offsets and partitions are not negative")
        if partition in bounds:
            raise ValueError(f"'{text}': a bound for that partition was already given")
        bounds[partition] = offset
    return bounds


@dataclass(frozen=True)
class Filters:
    """Which dead letters to replay; an empty filter selects everything.

    Offsets are the dead letters' own (in the dead-letter topic), both bounds
    included; times are ``dlq.failed.at``, ``since`` included, ``until`` not.
    """

    stages: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()
    from_offsets: Mapping[int | None, int] = field(default_factory=dict)
    to_offsets: Mapping[int | None, int] = field(default_factory=dict)
    since_ms: int | None = None
    until_ms: int | None = None

    def bounds(self, partition: int) -> tuple[int, int | None]:
        """First and last offset (inclusive) to consider in ``partition``."""
        low = self.from_offsets.get(partition, self.from_offsets.get(None, 0))
        return low, self.to_offsets.get(partition, self.to_offsets.get(None))

    def matches(self, partition: int, offset: int, headers: Mapping[str, str]) -> bool:
        low, high = self.bounds(partition)
        if offset < low or (high is not None and offset > high):
            return False
        if self.stages and headers.get("dlq.error.stage") not in self.stages:
            return False
        if self.error_classes and headers.get("dlq.error.class") not in self.error_classes:
            return False
        if self.since_ms is not None or self.until_ms is not None:
            failed = _int(headers.get("dlq.failed.at"))
            if failed is None:
                return False
            if self.since_ms is not None and failed < self.since_ms:
                return False
            if self.until_ms is not None and failed >= self.until_ms:
                return False
        return True


@dataclass(frozen=True)
class ReplayOptions:
    """What one run of ``dlq replay`` replays, and how."""

    filters: Filters = field(default_factory=Filters)
    skip_unmatched: bool = False
    max_replays: int | None = None  # None: dlq.max_replays
    rate: float = 0.0  # replayed events per second; 0: as fast as possible
    dry_run: bool = False
    follow: bool = False
    group: str | None = None  # None: dlq.replay_group, or <kafka.group_id>.dlq-replay


@dataclass(frozen=True)
class Decision:
    """What to do with one dead letter; ``reason`` says why for skip, hold and park."""

    kind: Kind
    reason: str = ""
    topic: str = ""
    partition: int | None = None
    headers: Headers = field(default_factory=list)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def dlq_headers(record: SourceRecord) -> dict[str, str]:
    """The ``dlq.*`` headers as text (the last one wins if a name repeats)."""
    out: dict[str, str] = {}
    for name, value in record.headers() or []:
        if name.startswith("dlq.") and value is not None:
            out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


def decide(
    record: SourceRecord,
    filters: Filters,
    *,
    max_replays: int,
    skip_unmatched: bool,
    dead_letter_topic: str,
    partitions_of: Callable[[str], int | None],
) -> Decision:
    """Replay, park, skip (for good) or hold (for a later run) one dead letter.

    Holding is for what another run may well replay: records the filters left
    out (unless ``skip_unmatched``) and records whose topic does not exist yet.
    A record that can never be replayed (no original topic, a truncated stub,
    an unreadable count) is skipped for good, so it does not pin the group's
    offset forever.
    """
    dlq = dlq_headers(record)
    if not filters.matches(record.partition() or 0, record.offset() or 0, dlq):
        return Decision("skip" if skip_unmatched else "hold", UNMATCHED)
    topic = dlq.get("dlq.original.topic", "")
    if not topic:
        return Decision("skip", "no dlq.original.topic")
    if dlq.get("dlq.value.truncated") == "true":
        return Decision("skip", "truncated stub (dlq.value.truncated)")
    if topic == dead_letter_topic:
        return Decision("skip", "original topic is the dead-letter topic")
    count = _int(dlq.get(REPLAY_COUNT_HEADER, "0"))
    if count is None or count < 0:
        return Decision("skip", f"bad {REPLAY_COUNT_HEADER}")
    if count >= max_replays:
        return Decision("park", f"{REPLAY_COUNT_HEADER} reached {max_replays}")
    partitions = partitions_of(topic)
    if partitions is None:
        return Decision("hold", f"unknown topic '{topic}'")
    original = _int(dlq.get("dlq.original.partition"))
    kept: Headers = [
        (k, v) for k, v in (record.headers() or []) if not k.startswith("dlq.")
    ]  # fmt: skip
    kept.append((REPLAY_COUNT_HEADER, str(count + 1).encode()))
    # Back to the partition it came from (keys keep their order); the topic's
    # own partitioner only when that partition no longer exists.
    target = original if original is not None and 0 <= original < partitions else None
    return Decision("replay", topic=topic, partition=target, headers=kept)


@dataclass
class _Group:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(example)


@dataclass
class Report:
    """Counts for the summary line, and per-group examples for ``--dry-run``."""

    replayed: dict[tuple[str, str], _Group] = field(default_factory=dict)
    parked: dict[tuple[str, str], _Group] = field(default_factory=dict)
    skipped: dict[str, _Group] = field(default_factory=dict)
    held: int = 0  # of the skipped: left for a later run of this group
    earlier: int = 0  # settled by an earlier run, met again while rereading held records
    stopped: list[str] = field(default_factory=list)

    def add(self, record: SourceRecord, decision: Decision) -> None:
        dlq = dlq_headers(record)
        example = where(record.topic(), record.partition(), record.offset())
        if "dlq.original.topic" in dlq:
            example += " <- " + where(
                dlq["dlq.original.topic"],
                _int(dlq.get("dlq.original.partition")),
                _int(dlq.get("dlq.original.offset")),
            )
        key = (dlq.get("dlq.error.stage", "?"), dlq.get("dlq.error.class", "?"))
        if decision.kind == "replay":
            self.replayed.setdefault(key, _Group()).add(example)
        elif decision.kind == "park":
            self.parked.setdefault(key, _Group()).add(example)
        else:
            self.skipped.setdefault(decision.reason, _Group()).add(example)
            self.held += decision.kind == "hold"

    def snapshot(self) -> Report:
        return copy.deepcopy(self)

    @staticmethod
    def _total(groups: Mapping[Any, _Group]) -> int:
        return sum(g.count for g in groups.values())

    def summary(self, dry_run: bool = False) -> str:
        reasons = ", ".join(f"{r}: {g.count}" for r, g in sorted(self.skipped.items()))
        counts = (self._total(self.replayed), self._total(self.parked), self._total(self.skipped))
        line = (
            "dry run: would replay {}, park {}, skip {}"
            if dry_run
            else "replayed {}, parked {}, skipped {}"
        ).format(*counts)
        if reasons:
            line += f" ({reasons})"
        if self.held:
            line += f"; {self.held} held for a later run"
        if self.stopped:
            line += f"; stopped early in {', '.join(self.stopped)}"
        return line

    def listing(self) -> list[str]:
        """What ``--dry-run`` prints above the summary: groups with a few examples each."""
        lines: list[str] = []
        sections: list[tuple[str, Mapping[str, _Group]]] = [
            ("replay", {f"{s} {c}": g for (s, c), g in sorted(self.replayed.items())}),
            ("park", {f"{s} {c}": g for (s, c), g in sorted(self.parked.items())}),
            ("skip", dict(sorted(self.skipped.items()))),
        ]
        for verb, groups in sections:
            if not groups:
                continue
            lines.append(f"would {verb} {self._total(groups)}:")
            for name, group in groups.items():
                lines.append(f"  {name}: {group.count}  e.g. {', '.join(group.examples)}")
        return lines
