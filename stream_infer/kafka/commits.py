"""Committing what is done: consumer offsets (at least once) or transactions (exactly once).

The worker talks to one :class:`Committer`; the two guarantees differ in what
"done" means and in what a commit is:

- at least once (:class:`OffsetCommitter`, here): a batch is done once the
  broker acknowledged every output of it; its offsets are committed through
  the consumer, asynchronously on a timer, synchronously on revoke and
  shutdown;
- exactly once (:class:`~stream_infer.kafka.transactions.TransactionCommitter`):
  a batch is done once its outputs are in the open transaction; its offsets
  go into the same transaction, and committing it makes both visible at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from confluent_kafka import KafkaError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from stream_infer.config import Settings
from stream_infer.errors import CommitError
from stream_infer.kafka.consumer import InputConsumer, topic_acl_problem
from stream_infer.kafka.deliveries import Deliveries
from stream_infer.kafka.offsets import Batch, OffsetTracker, TopicPartition
from stream_infer.kafka.producer import OutputProducer
from stream_infer.kafka.transactions import TransactionCommitter
from stream_infer.logging import get_logger

__all__ = ["Committer", "OffsetCommitter", "make_committer", "transient_commit_error"]

log = get_logger("commits")

_TRANSIENT_COMMIT = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT, KafkaError._WAIT_COORD,
}  # fmt: skip


def transient_commit_error(exc: BaseException) -> bool:
    err = getattr(exc, "error", None)
    return (
        isinstance(exc, CommitError)
        and err is not None
        and (err.retriable() or err.code() in _TRANSIENT_COMMIT)
    )


class Committer(Protocol):
    """What the worker loop needs from either guarantee."""

    def gate(self, batch: Batch | None = None) -> AbstractContextManager[bool]:
        """Held while a batch's outputs are produced; yields False for a stale batch."""

    def consumed(self, batch: Batch) -> None:
        """A batch was just consumed (before it is decoded)."""

    def produced(self, batch: Batch) -> None:
        """Every output of ``batch`` was handed to the producer (the gate is held)."""

    def due(self, urgent: bool = False) -> None:
        """Commit if the interval has passed (every loop turn), or now when ``urgent``.

        Urgent is the pipeline being full: at least once that only brings the
        periodic commit forward; exactly once it ends the transaction, since its
        batches count as in flight until it commits.
        """

    def check(self) -> None:
        """Recover from a failure found in the background, or raise (every loop turn)."""

    def commit_now(self, partitions: list[TopicPartition] | None, within: float) -> None:
        """Commit what is done, now (revoke, shutdown), retrying transient errors."""

    def forget(self, partitions: Iterable[TopicPartition], lost: bool = False) -> None:
        """Partitions are gone (revoked after ``commit_now``, or lost)."""


@contextmanager
def _open_gate() -> Iterator[bool]:
    yield True


class OffsetCommitter:
    """At least once: commit each partition past the batches whose outputs are acknowledged."""

    def __init__(
        self,
        consumer: InputConsumer,
        tracker: OffsetTracker,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._tracker = tracker
        self._every_s = every_s
        self._clock = clock
        self._last = 0.0

    def gate(self, batch: Batch | None = None) -> AbstractContextManager[bool]:
        return _open_gate()

    def consumed(self, batch: Batch) -> None:
        return None

    def produced(self, batch: Batch) -> None:
        return None

    def check(self) -> None:
        return None  # a fatal producer error stops the worker (see Worker._raise_fatal)

    def _fold_failures(self) -> None:
        """Positions whose asynchronous commit failed are offered again."""
        consumer, tracker = self._consumer, self._tracker
        while consumer.commit_failures:
            tracker.failed(consumer.commit_failures.pop()[0])

    def due(self, urgent: bool = False) -> None:
        now = self._clock()
        if not urgent and now - self._last < self._every_s:
            return
        self._last = now
        self._fold_failures()
        offsets = self._tracker.to_commit()
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except CommitError as exc:
            log.warning("%s (will retry)", exc)
            return
        self._tracker.sent(offsets)

    def commit_now(self, partitions: list[TopicPartition] | None, within: float) -> None:
        """Synchronously commit every earned position, even one an async commit already sent.

        Re-sending is what keeps a clean rebalance free of duplicates: an
        asynchronous commit handed out just before the revoke can still fail
        (``ILLEGAL_GENERATION`` while the group rebalances), and its failure
        report may only arrive after the partition has moved on.
        """
        self._fold_failures()
        offsets = self._tracker.to_commit(partitions, resend=True)
        if not offsets:
            return
        try:
            for attempt in Retrying(
                retry=retry_if_exception(transient_commit_error),
                wait=wait_exponential(multiplier=0.1, max=1.0),
                stop=stop_after_delay(max(0.0, within)),
                reraise=True,
            ):
                with attempt:
                    self._consumer.commit(offsets, sync=True)
        except CommitError as exc:
            log.warning("%s; the next owner may redo some work", exc)
            return
        self._tracker.sent(offsets)
        log.info(
            "committed %s", ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(offsets.items()))
        )

    def forget(self, partitions: Iterable[TopicPartition], lost: bool = False) -> None:
        self._tracker.forget(partitions)


def make_committer(
    settings: Settings,
    producer: OutputProducer,
    deliveries: Deliveries,
    consumer: InputConsumer,
    tracker: OffsetTracker,
    stopping: Callable[[], bool],
) -> Committer:
    """The committer of the configured guarantee (exactly once: its id registered already)."""
    p = settings.processing
    if not p.exactly_once:
        return OffsetCommitter(consumer, tracker, p.commit_every_s)
    outputs = {
        "topics.output": [settings.topics.output],
        "topics.dead_letter": [settings.topics.dead_letter],
    }
    committer = TransactionCommitter(
        producer,
        deliveries,
        consumer,
        tracker,
        p.commit_every_s,
        stopping=stopping,
        # Aborts that keep coming: is an ACL missing? (a short admin request, off the hot path)
        diagnose=lambda: topic_acl_problem(settings.kafka.admin_config(), outputs, timeout=3.0),
    )
    committer.start()
    return committer
