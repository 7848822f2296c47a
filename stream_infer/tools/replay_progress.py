"""How far ``dlq replay`` got in one dead-letter partition, kept in its group's committed offset.

A consumer group remembers one number per partition, "everything before this
is done". A filtered replay needs a little more: it may replay offset 12 while
holding back offset 10, which its filters did not select, for a later run with
other filters. So the committed offset is the first record still held back,
and the commit's metadata (a string Kafka stores with the offset, written in
the same transaction as the replayed events) says how far the scan got and
which ranges below that are still held. The next run rereads from the
committed offset, passes over what is done and reconsiders only what is held.

Held records cost metadata space, and brokers refuse metadata longer than
``offset.metadata.max.bytes`` (4096 by default), so :meth:`PartitionProgress.hold`
refuses once the encoding would pass :data:`METADATA_BUDGET`; the caller then
stops that partition where it is, which keeps every guarantee and says why.
:class:`RunState` bundles the progress of every partition with the run's
report, so an aborted transaction can put both back as they were.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from stream_infer.tools.replay_rules import Report

__all__ = ["METADATA_BUDGET", "PartitionProgress", "RunState"]

_MAGIC = "sir1"
METADATA_BUDGET = 3000  # characters; leaves room below the broker's 4096-byte default


@dataclass
class PartitionProgress:
    """Every offset below ``frontier`` was examined; those in ``held`` ranges wait for later.

    ``held`` holds sorted, disjoint ``[start, end)`` ranges below ``frontier``.
    A range may span offsets that hold no record (transaction markers,
    compacted records): that is harmless, no record will ever be read there.
    """

    frontier: int
    held: list[list[int]] = field(default_factory=list)

    def committed(self) -> int:
        """The offset to commit: the first held record, else the frontier."""
        return self.held[0][0] if self.held else self.frontier

    def is_held(self, offset: int) -> bool:
        i = bisect.bisect_right(self.held, offset, key=lambda r: r[0]) - 1
        return i >= 0 and self.held[i][0] <= offset < self.held[i][1]

    def is_done(self, offset: int) -> bool:
        """Settled by an earlier run (or earlier in this one): not to be looked at again."""
        return offset < self.frontier and not self.is_held(offset)

    def settle(self, offset: int) -> None:
        """The record at ``offset`` was replayed, parked or skipped for good."""
        if offset >= self.frontier:
            self.frontier = offset + 1
            return
        for i, (start, end) in enumerate(self.held):
            if start <= offset < end:
                pieces = [[s, e] for s, e in ((start, offset), (offset + 1, end)) if s < e]
                self.held[i : i + 1] = pieces
                return

    def hold(self, offset: int) -> bool:
        """Examine the record at ``offset`` and leave it for a later run.

        Returns False, changing nothing, when there is no room left to track it.
        Consecutive held records share one range: the scan is in offset order,
        so no record lies between the end of the last range and ``offset``
        when that end is the frontier.
        """
        if offset < self.frontier:
            return True  # already held (is_done was False), and stays so
        saved = (self.frontier, [r[:] for r in self.held])
        if self.held and self.held[-1][1] == self.frontier:
            self.held[-1][1] = offset + 1
        else:
            self.held.append([offset, offset + 1])
        self.frontier = offset + 1
        if len(self.encode()) <= METADATA_BUDGET:
            return True
        self.frontier, self.held = saved
        return False

    def reach(self, offset: int) -> None:
        """The partition holds no readable record below ``offset`` that was not seen."""
        self.frontier = max(self.frontier, offset)

    def held_count(self) -> int:
        return sum(end - start for start, end in self.held)

    def encode(self) -> str:
        """``sir1;<committed>;<frontier - committed>;<gap>.<length>,...``; a gap follows a range."""
        base = self.committed()
        parts, last = [], base
        for start, end in self.held:
            parts.append(f"{start - last}.{end - start}")
            last = end
        return f"{_MAGIC};{base};{self.frontier - base};{','.join(parts)}"

    @classmethod
    def decode(
        cls, committed: int, metadata: str | None, low: int
    ) -> tuple[PartitionProgress, str | None]:
        """Progress from a committed offset and its metadata, plus a warning when ignored.

        ``low`` is the partition's first retained offset: records deleted by
        retention can no longer be held. An offset without our metadata (set
        with Kafka's own tools, say) simply means "everything before is done".
        """
        if committed < 0:
            return cls(low), None
        progress, warning = cls(committed), None
        if metadata:
            parsed = _parse(metadata)
            if parsed is None:
                warning = "its commit metadata is not replay progress; using the offset alone"
            elif parsed.committed() != committed:
                warning = "its offset was moved outside dlq replay; using the offset alone"
            else:
                progress = parsed
        progress.frontier = max(progress.frontier, low)
        progress.held = [[max(s, low), e] for s, e in progress.held if e > low]
        return progress, warning


@dataclass
class RunState:
    """Everything a transaction changes, so that an aborted one can be undone."""

    progress: dict[int, PartitionProgress]
    position: dict[int, int]  # per partition, the next offset to read
    active: set[int]  # partitions not finished yet
    report: Report

    def copy(self) -> RunState:
        return RunState(
            {
                p: PartitionProgress(g.frontier, [r[:] for r in g.held])
                for p, g in self.progress.items()
            },
            dict(self.position),
            set(self.active),
            self.report.snapshot(),
        )


def _parse(text: str) -> PartitionProgress | None:
    try:
        magic, base_s, ahead_s, ranges = text.split(";")
        if magic != _MAGIC:
            return None
        base, ahead = int(base_s), int(ahead_s)
        held: list[list[int]] = []
        last = base
        for item in filter(None, ranges.split(",")):
            gap_s, length_s = item.split(".")
            gap, length = int(gap_s), int(length_s)
            if gap < 0 or length < 1 or (held and gap == 0):
                return None
            held.append([last + gap, last + gap + length])
            last += gap + length
        if base < 0 or ahead < 0 or last > base + ahead or (held and held[0][0] != base):
            return None
        return PartitionProgress(base + ahead, held)
    except ValueError:
        return None
