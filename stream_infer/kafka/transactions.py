"""Exactly once: every batch's outputs and its input offsets commit in one Kafka transaction.

One transactional producer per worker, its transaction spanning however many
micro-batches were produced since the last commit (``processing.
commit_interval_ms``, 100 ms by default). Producing happens on the inference
thread and on the loop thread, so it takes the *gate*: a lock that also begins
the transaction lazily, and that a commit holds while it sends the offsets
and commits. A batch joins the transaction whole (all its predictions and dead
letters in one critical section), so the offsets committed always cover
exactly the outputs committed.

Zombies are fenced by the consumer group, as KIP-447 has it: the offsets are
sent with the consumer's group metadata, and a worker that lost its partitions
(frozen past its session, say) is refused when it tries to commit. Its
transaction aborts and nothing of it becomes visible to ``read_committed``
readers. The transactional id is ``stream-infer-<group>-<worker id>``: unique
per live worker, and stable across restarts when ``processing.worker_id`` is,
so that a restarted worker aborts its predecessor's open transaction at once
instead of leaving readers blocked until ``transaction.timeout.ms``.

Failures:

- *abortable* (a record refused, a fenced offset commit, a timeout): abort,
  forget every batch consumed since the last commit, and rewind those
  partitions to where the last commit left them; a record the broker refused
  for good is remembered and dead-lettered the second time round;
- *fatal* (the producer was fenced, its epoch is stale): a new producer with the
  same transactional id (which fences the old one for good), then the same
  rewind; more than three of those within a minute stop the worker, since it
  then probably shares its id with another live worker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from stream_infer.errors import ProduceError, kafka_error_text
from stream_infer.kafka.consumer import InputConsumer
from stream_infer.kafka.deliveries import Deliveries
from stream_infer.kafka.offsets import Batch, OffsetTracker
from stream_infer.kafka.offsets import TopicPartition as TP
from stream_infer.kafka.producer import FENCED, OutputProducer
from stream_infer.kafka.security import AUTHORIZATION, denied
from stream_infer.logging import get_logger

__all__ = ["TransactionCommitter", "transactional_id"]

log = get_logger("transactions")

_REBUILDS_PER_MINUTE = 3
_CALL_S = 10.0  # longest single transactional call; retried while the time allows
_ABORTS_BEFORE_DIAGNOSIS = 3  # in a row, without a commit: then ask whether an ACL is missing


def transactional_id(group: str, worker_id: str) -> str:
    return f"stream-infer-{group}-{worker_id}"


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaException) and bool(exc.args[0].retriable())


class TransactionCommitter:
    def __init__(
        self,
        producer: OutputProducer,
        deliveries: Deliveries,
        consumer: InputConsumer,
        tracker: OffsetTracker,
        every_s: float,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        stopping: Callable[[], bool] = lambda: False,
        diagnose: Callable[[], str | None] | None = None,
    ) -> None:
        self._producer = producer
        self._deliveries = deliveries
        self._consumer = consumer
        self._tracker = tracker
        self._every_s = every_s
        self._timeout = timeout_s
        self._clock = clock
        self._stopping = stopping  # a stop request ends retries: shutdown tries once more
        self._lock = threading.Lock()
        self._open = False
        self._batches: list[Batch] = []  # produced into the open transaction, in order
        self._safe: dict[TP, int] = {}  # where each partition resumes after an abort
        self._last = 0.0
        self._rebuilt: deque[float] = deque(maxlen=_REBUILDS_PER_MINUTE)
        # Asked after aborts in a row: a missing ACL fails every transaction the same way,
        # and librdkafka reports it only in its log (deliveries come back purged).
        self._diagnose = diagnose
        self._aborts_in_row = 0
        self.epoch = 0  # bumped by every abort: batches consumed before it are stale
        self.commits = 0
        self.aborts = 0
        deliveries.set_gate(self._locked_open)

    def start(self) -> None:
        """Register the transactional id (fencing any previous holder of it)."""
        try:
            self._producer.init_transactions(self._timeout)
        except KafkaException as exc:
            raise self._refusal(exc.args[0], "initialising transactions") from None

    def _refusal(self, err: Any, what: str) -> ProduceError:
        """The error that stops the worker: a missing ACL named as such, else the Kafka error."""
        if err.code() not in AUTHORIZATION:
            return ProduceError(f"{what} failed", err)
        conf = self._producer.conf
        txn_id = str(conf.get("transactional.id"))
        prefix = transactional_id(self._consumer.group_id, "")
        if err.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            resource, grant = "the cluster", "IDEMPOTENT_WRITE on the cluster"
        elif err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            resource, grant = f"consumer group '{self._consumer.group_id}'", "READ on the group"
        elif err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            resource, grant = "a topic of the transaction", "WRITE on the output topics"
        else:
            resource = f"transactional id '{txn_id}'"
            grant = f"WRITE and DESCRIBE on transactional ids with the prefix '{prefix}'"
        return ProduceError(f"{denied(err.name(), conf, 'use', resource, grant)} ({what})")

    # -- producing ----------------------------------------------------------------

    def _begin(self) -> None:
        if not self._open:
            self._producer.begin_transaction()
            self._open = True

    @contextmanager
    def _locked_open(self) -> Iterator[bool]:
        with self._lock:
            self._begin()
            yield True

    @contextmanager
    def _batch_gate(self, batch: Batch | None) -> Iterator[bool]:
        with self._lock:
            if batch is not None and batch.epoch != self.epoch:
                yield False  # consumed before an abort: it will be consumed again
                return
            try:
                self._begin()
            except KafkaException as exc:
                if exc.args[0].code() not in FENCED:
                    raise
                # Fenced: the loop rebuilds the producer and rewinds, this batch included.
                yield False
                return
            yield True

    def gate(self, batch: Batch | None = None) -> AbstractContextManager[bool]:
        return self._batch_gate(batch)

    def consumed(self, batch: Batch) -> None:
        batch.epoch = self.epoch
        safe = self._safe
        for tp, first in batch.firsts.items():
            safe.setdefault(tp, first)

    def produced(self, batch: Batch) -> None:
        self._batches.append(batch)

    # -- committing ----------------------------------------------------------------

    def due(self, urgent: bool = False) -> None:
        if (urgent and self._batches) or self._clock() - self._last >= self._every_s:
            self._commit(self._timeout)

    def commit_now(self, partitions: list[TP] | None, within: float) -> None:
        self._commit(max(1.0, within))

    def _offsets(self) -> dict[TP, int]:
        owned = self._tracker.owned
        offsets: dict[TP, int] = {}
        for batch in self._batches:
            for tp, last in batch.positions.items():
                if tp in owned:
                    offsets[tp] = max(offsets.get(tp, 0), last + 1)
                else:  # cannot happen: revokes commit first, losses abort
                    log.error("batch %d holds %s[%d], not owned any more", batch.seq, *tp)
        return offsets

    def _retrying(self, within: float) -> Retrying:
        return Retrying(
            retry=retry_if_exception(lambda exc: _retriable(exc) and not self._stopping()),
            wait=wait_exponential(multiplier=0.1, max=1.0),
            stop=stop_after_delay(within),
            reraise=True,
        )

    def _commit(self, within: float) -> None:
        with self._lock:
            self._last = self._clock()
            deliveries = self._deliveries
            if deliveries.waiting:
                self._begin()
                deliveries.drain(within)
            if deliveries.txn_failure is not None:
                self._abort(f"a delivery failed: {kafka_error_text(deliveries.txn_failure)}")
                return
            if not self._open:
                return
            offsets = self._offsets()
            call_s = min(within, _CALL_S)  # each call short, so a stop request is seen
            try:
                if offsets:
                    tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                    metadata = self._consumer.group_metadata()
                    for attempt in self._retrying(within):
                        with attempt:
                            self._producer.send_offsets_to_transaction(tps, metadata, call_s)
                for attempt in self._retrying(within):
                    with attempt:
                        self._producer.commit_transaction(call_s)
            except KafkaException as exc:
                self._failed(exc.args[0], "committing the transaction")
                return
            self._open = False
            batches, self._batches = self._batches, []
            for batch in batches:
                deliveries.acknowledge(batch)
            self._safe.update(offsets)
            self.commits += 1
            self._aborts_in_row = 0

    def _failed(self, err: Any, what: str) -> None:
        """An error from the transactional API: abort, rebuild, or stop (lock held)."""
        if err.code() in AUTHORIZATION:  # aborting and redoing would only fail the same way
            raise self._refusal(err, what)
        if err.txn_requires_abort() or (not err.fatal() and self._deliveries.txn_failure):
            self._abort(f"{what} failed: {kafka_error_text(err)}")
        elif err.fatal() and err.code() in FENCED:
            self._rebuild(f"{what} failed: {kafka_error_text(err)}")
        else:
            raise self._diagnosed(ProduceError(f"{what} failed", err))

    def _diagnosed(self, error: ProduceError) -> ProduceError:
        """The error to stop with: a missing ACL, when one explains it, else ``error``.

        A transaction that a missing WRITE doomed ends in errors that say nothing of
        ACLs (purged deliveries, then INVALID_TXN_STATE from the abort).
        """
        problem = self._diagnose() if self._diagnose is not None else None
        return ProduceError(problem) if problem is not None else error

    def _abort(self, why: str) -> None:
        self._producer.poll(0)  # delivery reports of the doomed transaction, if any are due
        self._deliveries.salvage()
        log.warning(
            "aborting the transaction (%s): %d batches will be consumed again", why,
            len(self._batches),
        )  # fmt: skip
        try:
            for attempt in self._retrying(self._timeout):
                with attempt:
                    self._producer.abort_transaction(self._timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() and err.code() in FENCED:
                self._rebuild(f"aborting failed: {kafka_error_text(err)}")
                return
            raise self._diagnosed(ProduceError("aborting the transaction failed", err)) from None
        self.aborts += 1
        self._aborts_in_row += 1
        if self._diagnose is not None and self._aborts_in_row % _ABORTS_BEFORE_DIAGNOSIS == 0:
            problem = self._diagnose()
            if problem is not None:
                raise ProduceError(problem)
        self._rewind()

    def _rebuild(self, why: str) -> None:
        """The producer is fenced: start a new one under the same id, then rewind."""
        now = self._clock()
        if len(self._rebuilt) == _REBUILDS_PER_MINUTE and now - self._rebuilt[0] < 60:
            raise ProduceError(
                f"the transactional producer was fenced {_REBUILDS_PER_MINUTE + 1} times "
                f"within a minute ({why}); does another live worker use the same "
                "processing.worker_id?"
            )
        self._rebuilt.append(now)
        log.warning("transactional producer fenced (%s): starting a new one", why)
        self._producer.rebuild()
        self._producer.init_transactions(self._timeout)
        self._rewind()

    def _rewind(self) -> None:
        """Forget everything since the last commit and consume it again."""
        self.epoch += 1
        self._open = False
        self._batches = []
        self._deliveries.reset()
        self._tracker.reset()
        owned = self._tracker.owned
        for tp, offset in self._safe.items():
            if tp in owned:
                self._consumer.rewind(tp, offset)

    def check(self) -> None:
        """Called every loop turn: a producer fenced in the background is rebuilt here."""
        fatal = self._producer.fatal
        err = getattr(fatal, "error", None)
        if fatal is None or err is None or err.code() not in FENCED:
            return
        with self._lock:
            self._rebuild(kafka_error_text(err))

    def forget(self, partitions: Iterable[TP], lost: bool = False) -> None:
        partitions = list(partitions)
        if lost:
            with self._lock:
                if self._open or self._batches:
                    self._abort("partitions lost: their work must not commit")
        for tp in partitions:
            self._safe.pop(tp, None)
        self._tracker.forget(partitions)
