"""What may be committed: per partition, the offset after the last batch that is fully acknowledged.

Batches complete out of order (acknowledgements race, retries come late), so a
partition's commit position only moves past a batch once that batch and every
earlier batch holding the same partition are done. The tracker is plain data,
with no Kafka client in it, so the rule can be tested on its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_infer.inference.envelope import Origins
from stream_infer.logging import where

__all__ = ["Batch", "OffsetTracker", "TopicPartition"]

TopicPartition = tuple[str, int]


@dataclass(eq=False, slots=True)
class Batch:
    """Consumed records whose outputs are in flight; done once every row is acknowledged.

    Each input row yields exactly one record (its prediction or its dead
    letter), so the count of rows still waiting is known at birth.
    """

    seq: int
    records: Sequence[Any]
    pending: int = 0
    born: float = field(default_factory=time.monotonic)
    produced_at: float | None = None  # when its last output was handed to the producer
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # last offset each
    firsts: dict[tuple[str, int], int] = field(default_factory=dict)  # first offset each
    dead_letter_headers: dict[int, Any] = field(default_factory=dict)
    dead_letters: int = 0  # rows answered by a dead letter rather than a prediction
    epoch: int = 0  # exactly once: the transaction generation it was consumed in
    origins: Origins = field(init=False)  # topic, partition, offset... of every record

    def __post_init__(self) -> None:
        self.pending = len(self.records)
        self.origins = origins = Origins.of(self.records)
        positions: dict[Any, Any] = self.positions
        firsts: dict[Any, Any] = self.firsts
        tps = zip(origins.topics, origins.partitions, strict=True)
        for tp, offset in zip(tps, origins.offsets, strict=True):  # the last per partition wins
            if tp not in positions:
                firsts[tp] = offset
            positions[tp] = offset

    @property
    def done(self) -> bool:
        return self.pending <= 0

    def position(self, i: int) -> tuple[str | None, int | None, int | None]:
        """Row ``i``'s record as (topic, partition, offset)."""
        o = self.origins
        return (o.topics[i], o.partitions[i], o.offsets[i])

    def where(self, i: int) -> str:
        """Row ``i``'s record as ``topic[partition]@offset``, for log lines."""
        return where(*self.position(i))

    def locate(self, msg: Any) -> int | None:
        """The row a failed prediction answered, from its own ``source`` (failures only)."""
        try:
            src = orjson.loads(msg.value())["source"]
            wanted = (src["topic"], src["partition"], src["offset"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        o = self.origins
        for i, at in enumerate(zip(o.topics, o.partitions, o.offsets, strict=True)):
            if at == wanted:
                return i
        return None


class OffsetTracker:
    """Commit positions for the partitions this worker owns, plus the batches still open."""

    def __init__(self) -> None:
        self._queues: dict[TopicPartition, deque[tuple[Batch, int]]] = {}
        self._ready: dict[TopicPartition, int] = {}  # next offset to commit, once earned
        self._sent: dict[TopicPartition, int] = {}  # last position handed to a commit
        self._open: deque[Batch] = deque()

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._queues.setdefault(tp, deque())

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop revoked or lost partitions: their open batches still finish, uncommitted."""
        for tp in partitions:
            self._queues.pop(tp, None)
            self._ready.pop(tp, None)
            self._sent.pop(tp, None)

    @property
    def owned(self) -> set[TopicPartition]:
        return set(self._queues)

    def open(self, batch: Batch) -> None:
        """Track a freshly consumed batch; records of partitions not owned are not tracked."""
        self._open.append(batch)
        queues = self._queues
        for tp, last in batch.positions.items():
            q = queues.get(tp)
            if q is not None:
                q.append((batch, last))

    def in_flight(self) -> int:
        """Batches consumed but not yet fully acknowledged (what backpressure bounds).

        Done batches are let go wherever they are, so one stuck batch does not
        keep every later one (and its records) alive.
        """
        opened = self._open
        if any(b.done for b in opened):
            self._open = opened = deque(b for b in opened if not b.done)
        return len(opened)

    def open_batches(self) -> list[Batch]:
        """Batches not yet fully acknowledged (a copy, safe to read from another thread)."""
        return [b for b in list(self._open) if not b.done]

    def oldest(self) -> Batch | None:
        """The longest-open batch still waiting for acknowledgements."""
        return self._open[0] if self._open else None

    def _advance(self) -> None:
        for tp, q in self._queues.items():
            last = None
            while q and q[0][0].done:
                last = q.popleft()[1]
            if last is not None:
                self._ready[tp] = last + 1

    def to_commit(
        self, only: Iterable[TopicPartition] | None = None, resend: bool = False
    ) -> dict[TopicPartition, int]:
        """Positions earned since the last commit was handed out (all, or just ``only``).

        ``resend`` returns every earned position, sent before or not: what a revoke
        or a shutdown commits, because an asynchronous commit handed out earlier
        may still fail (``ILLEGAL_GENERATION`` during a rebalance) after the
        partition is gone, and then nothing would ever commit it.
        """
        self._advance()
        wanted = (
            self._ready
            if only is None
            else {tp: self._ready[tp] for tp in only if tp in self._ready}
        )
        if resend:
            return dict(wanted)
        return {tp: off for tp, off in wanted.items() if self._sent.get(tp) != off}

    def reset(self) -> None:
        """Forget every open batch (a transaction was aborted: they will be consumed again)."""
        for q in self._queues.values():
            q.clear()
        self._open.clear()

    def sent(self, offsets: dict[TopicPartition, int]) -> None:
        self._sent.update(offsets)

    def failed(self, partitions: Iterable[TopicPartition]) -> None:
        """A commit did not land: offer these positions again next time."""
        for tp in partitions:
            self._sent.pop(tp, None)
