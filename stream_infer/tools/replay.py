"""``stream-infer dlq replay``: dead letters back to their original topic, each exactly once.

Progress is the committed offset of the replay's own consumer group on the
dead-letter topic (``dlq.replay_group``, by default ``<kafka.group_id>.dlq-replay``).
A transactional producer writes the replayed events *and* that group's
offsets in one transaction (``send_offsets_to_transaction``), and the
dead-letter topic is read ``read_committed``, so a replay killed at any point
has committed both the events and the progress, or neither: the next run
starts where the last commit left off, and a reader of the original topic
with ``read_committed`` (the worker) never sees an event of an aborted
transaction. The transactional id is derived from the group, so a new run
first aborts whatever a killed run left open, and two runs of one group at
once fence each other instead of both replaying.

Transactions are bounded (``dlq.transaction_records`` / ``dlq.transaction_ms``).
The run ends at the partitions' last committed offsets as of its start (or
never, with ``follow``); the decisions themselves live in ``replay_rules.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, cast

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from stream_infer.config import Settings
from stream_infer.errors import KafkaClientError, kafka_error_text
from stream_infer.inference.envelope import SourceRecord
from stream_infer.logging import get_logger
from stream_infer.tools.replay_progress import PartitionProgress, RunState
from stream_infer.tools.replay_rules import Decision, ReplayOptions, Report, decide

__all__ = ["Replay", "ReplayOptions"]

log = get_logger("replay")

_TIMEOUT_S = 30.0
_ABORTS_IN_A_ROW = 5  # transactions aborted one after another before giving up


def _retriable(exc: BaseException) -> bool:
    """Worth the same call again: the broker was busy, never "abort" or "fatal"."""
    if not isinstance(exc, KafkaException):
        return False
    err = exc.args[0]
    if err.fatal() or err.txn_requires_abort():
        return False
    return bool(err.retriable()) or err.code() in (
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError._TIMED_OUT,
    )


def _retrying() -> Retrying:
    return Retrying(
        retry=retry_if_exception(_retriable),
        stop=stop_after_delay(60),
        wait=wait_exponential(multiplier=0.1, max=2),
        reraise=True,
    )


Progress = Callable[[int, int | None], None]  # (records examined, records in range)


class Replay:
    """One run of ``dlq replay``; :meth:`stop` (from a signal handler) ends it after a commit."""

    def __init__(self, settings: Settings, options: ReplayOptions) -> None:
        self._settings, self._options = settings, options
        self._topic = settings.topics.dead_letter
        self.group = options.group or settings.dlq.group(settings.kafka.group_id)
        self._max_replays = options.max_replays or settings.dlq.max_replays
        self._max_records = settings.dlq.transaction_records
        self._max_s = settings.dlq.transaction_ms / 1000
        self._stopping = threading.Event()
        self._topics: dict[str, int] = {}  # partition counts of the cluster's topics
        self._looked_up: set[str] = set()
        self._starts: dict[int, int] = {}
        self._ends: dict[int, int | None] = {}  # None: no end (follow)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # The open transaction.
        self._open, self._in_txn, self._txn_started = False, 0, 0.0
        self._committed: dict[int, tuple[int, str]] = {}
        self._last_commit = time.monotonic()
        self._aborts = 0
        self._next_send = 0.0
        self._delivery_error: KafkaError | None = None
        self._fatal: KafkaError | None = None
        self._state = RunState({}, {}, set(), Report())
        self._saved = self._state

    def stop(self) -> None:
        self._stopping.set()

    # -- clients -------------------------------------------------------------------------

    def _new_consumer(self) -> Consumer:
        conf = self._settings.kafka.consumer_config(f"dlq-replay-{self.group}")
        conf.pop("partition.assignment.strategy", None)  # partitions are assigned, not subscribed
        conf.update({"group.id": self.group, "isolation.level": "read_committed"})
        conf.update({"enable.partition.eof": True, "logger": get_logger("librdkafka")})
        return Consumer(conf)

    def _new_producer(self) -> Producer:
        conf = self._settings.kafka.producer_config(f"dlq-replay-{self.group}")
        conf["transactional.id"] = f"dlq-replay:{self.group}:{self._topic}"
        conf["logger"] = get_logger("librdkafka")
        conf["error_cb"] = self._on_error
        return Producer(conf)

    def _on_error(self, err: KafkaError) -> None:
        # A fatal producer error reaches the caller as a bare _FATAL; the reason
        # (fenced by a newer replay, say) only comes through here.
        if err.fatal() and self._fatal is None:
            self._fatal = err
        log.log(40 if err.fatal() else 30, "replay producer: %s", kafka_error_text(err))

    def _refresh_topics(self) -> None:
        assert self._consumer is not None
        meta = self._consumer.list_topics(timeout=_TIMEOUT_S)
        self._topics = {n: len(t.partitions) for n, t in meta.topics.items() if t.error is None}

    def _partitions_of(self, name: str) -> int | None:
        if name not in self._topics and name not in self._looked_up:
            self._looked_up.add(name)  # one fresh look per unknown name and run
            self._refresh_topics()
        return self._topics.get(name)

    def _watermarks(self, partitions: list[int]) -> tuple[dict[int, int], dict[int, int]]:
        """First retained offset and last stable offset (read_committed's end) per partition."""
        admin = AdminClient(self._settings.kafka.admin_config())
        out: list[dict[int, int]] = []
        for spec in (OffsetSpec.earliest(), OffsetSpec.latest()):  # type: ignore[no-untyped-call]
            futures = admin.list_offsets(
                {TopicPartition(self._topic, p): spec for p in partitions},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=_TIMEOUT_S,
            )
            out.append({tp.partition: f.result().offset for tp, f in futures.items()})
        return out[0], out[1]

    # -- the run -------------------------------------------------------------------------

    def run(self, progress: Progress = lambda done, total: None) -> Report:
        """Replay up to the end offsets as of now (or until :meth:`stop` with ``follow``)."""
        self._consumer = self._new_consumer()
        try:
            self._refresh_topics()
            if self._topic not in self._topics:
                raise KafkaClientError(f"dead-letter topic '{self._topic}' does not exist")
            if not self._options.dry_run:
                self._producer = self._new_producer()
                # Before reading the group's offsets: this aborts whatever transaction a
                # killed run left open, so the offsets read next are settled ones.
                for attempt in _retrying():
                    with attempt:
                        self._producer.init_transactions(_TIMEOUT_S)
            self._start(list(range(self._topics[self._topic])))
            total = None if self._options.follow else sum(
                max(0, (self._ends[p] or 0) - s) for p, s in self._starts.items()
            )  # fmt: skip
            while self._state.active and not self._stopping.is_set():
                for msg in self._consumer.consume(500, 0.2):
                    self._message(msg)
                    if self._due() and not self._commit():
                        break  # aborted: the rest of this batch is read again
                    if self._stopping.is_set():
                        break  # unhandled records stay unhandled: the commit says so
                if self._due() or not self._state.active:
                    self._commit()
                progress(self._examined(), total)
            self._commit()
            return self._state.report
        except KafkaException as exc:
            self._raise(exc.args[0])
        finally:
            if self._producer is not None and self._open:
                # Ended by an error: abort now rather than leave the original topics'
                # read_committed readers waiting for the transaction timeout.
                with contextlib.suppress(KafkaException):
                    self._producer.abort_transaction(5)
            self._consumer.close()

    def _start(self, partitions: list[int]) -> None:
        assert self._consumer is not None
        low, stable = self._watermarks(partitions)
        for attempt in _retrying():
            with attempt:
                committed = self._consumer.committed(
                    [TopicPartition(self._topic, p) for p in partitions], timeout=_TIMEOUT_S
                )
        assignment = []
        for tp in committed:
            p = tp.partition
            if tp.error is not None:
                raise KafkaClientError(f"reading the offsets of group {self.group}", tp.error)
            progress, warning = PartitionProgress.decode(tp.offset, tp.metadata, low[p])
            if warning:
                log.warning("%s[%d] of group %s: %s", self._topic, p, self.group, warning)
            _, last = self._options.filters.bounds(p)
            end = stable[p] if last is None else min(stable[p], last + 1)
            start = progress.committed()
            self._ends[p] = None if self._options.follow else end
            self._starts[p] = start
            self._state.progress[p], self._state.position[p] = progress, start
            self._committed[p] = (start, progress.encode())
            if self._options.follow or start < end:
                self._state.active.add(p)
                assignment.append(TopicPartition(self._topic, p, start))
        self._consumer.assign(assignment)
        self._saved = self._state.copy()
        log.info(
            "dlq replay of %s, group %s: reading %d of its partitions",
            self._topic, self.group, len(assignment),
        )  # fmt: skip

    def _examined(self) -> int:
        done = 0
        for p, start in self._starts.items():
            end = self._ends[p]
            position = self._state.position[p]
            done += max(0, (position if end is None else min(position, end)) - start)
        return done

    # -- one message ---------------------------------------------------------------------

    def _message(self, msg: Message) -> None:
        p, offset, err = msg.partition(), msg.offset(), msg.error()
        assert p is not None
        assert offset is not None
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if p in self._state.active:
                    self._state.progress[p].reach(offset)
                    self._state.position[p] = max(self._state.position[p], offset)
                    self._maybe_finish(p)
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("reading %s: %s", self._topic, kafka_error_text(err))
            return
        end = self._ends[p]
        if p not in self._state.active or (end is not None and offset >= end):
            return  # fetched past this run's end, or before a pause took effect
        self._record(p, cast(SourceRecord, msg), msg, offset)
        self._state.position[p] = offset + 1
        self._maybe_finish(p)

    def _record(self, p: int, record: SourceRecord, msg: Message, offset: int) -> None:
        progress, report, opts = self._state.progress[p], self._state.report, self._options
        if progress.is_done(offset):
            report.earlier += 1
            return
        decision = decide(
            record,
            opts.filters,
            max_replays=self._max_replays,
            skip_unmatched=opts.skip_unmatched,
            dead_letter_topic=self._topic,
            partitions_of=self._partitions_of,
        )
        if decision.kind == "hold":
            if not progress.hold(offset):
                report.stopped.append(f"{self._topic}[{p}]@{offset}")
                log.warning(
                    "%s[%d]: stopping at offset %d: too many held-back records to track; "
                    "replay them, pass --skip-unmatched, or start later with --from-offset",
                    self._topic, p, offset,
                )  # fmt: skip
                self._finish(p)
                return
        else:
            if decision.kind == "replay" and self._producer is not None:
                self._send(msg, decision)
            progress.settle(offset)
        report.add(record, decision)

    def _send(self, msg: Message, decision: Decision) -> None:
        assert self._producer is not None
        rate = self._options.rate
        if rate > 0:
            now = time.monotonic()
            if self._next_send > now:
                self._stopping.wait(self._next_send - now)  # pacing, not synchronisation
            self._next_send = max(self._next_send, time.monotonic() - 1.0) + 1.0 / rate
        self._begin()
        kwargs: dict[str, Any] = {"headers": decision.headers, "on_delivery": self._delivered}
        if decision.partition is not None:
            kwargs["partition"] = decision.partition
        while True:
            try:
                self._producer.produce(decision.topic, msg.value(), msg.key(), **kwargs)
                break
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain it
        self._producer.poll(0)
        self._in_txn += 1

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = err

    def _maybe_finish(self, p: int) -> None:
        end = self._ends[p]
        if end is not None and p in self._state.active and self._state.position[p] >= end:
            self._finish(p)

    def _finish(self, p: int) -> None:
        assert self._consumer is not None
        self._state.active.discard(p)
        self._consumer.pause([TopicPartition(self._topic, p)])

    # -- transactions --------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._open and self._producer is not None:
            self._producer.begin_transaction()
            self._open, self._in_txn, self._txn_started = True, 0, time.monotonic()

    def _due(self) -> bool:
        """Time to commit: the open transaction is full or old, or progress waits too long."""
        age = time.monotonic() - (self._txn_started if self._open else self._last_commit)
        return age >= self._max_s or (self._open and self._in_txn >= self._max_records)

    def _commit(self) -> bool:
        """The changed offsets into the open transaction, then commit it.

        Returns False when the transaction had to be aborted; the state is then
        back at the last commit and the consumer rereads from there.
        """
        self._last_commit = time.monotonic()
        if self._producer is None:
            return True
        assert self._consumer is not None
        offsets = []
        for p, progress in self._state.progress.items():
            now = (progress.committed(), progress.encode())
            if self._committed.get(p) != now:
                offsets.append(TopicPartition(self._topic, p, now[0], metadata=now[1]))
        if not offsets and not self._open:
            return True
        try:
            self._begin()
            if offsets:
                self._producer.send_offsets_to_transaction(
                    offsets, self._consumer.consumer_group_metadata(), _TIMEOUT_S
                )
            for attempt in _retrying():  # only a retriable error may be retried here
                with attempt:
                    self._producer.commit_transaction(_TIMEOUT_S)
        except KafkaException as exc:
            self._abort(exc.args[0])
            return False
        self._open, self._aborts = False, 0
        for tp in offsets:
            self._committed[tp.partition] = (tp.offset, tp.metadata or "")
        self._saved = self._state.copy()
        return True

    def _raise(self, err: KafkaError) -> NoReturn:
        if self._producer is not None and err.code() == KafkaError._FATAL:
            try:  # serves the error callback that holds the reason, or raises it
                self._producer.poll(0)
            except KafkaException as exc:
                self._fatal = self._fatal or exc.args[0]
        cause = self._fatal or err
        fenced = cause.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED) or (
            "fenced" in cause.str().lower()
        )
        why = f"stopped: another replay of group {self.group} took over" if fenced else "failed"
        raise KafkaClientError(
            f"dlq replay {why}; what it did not commit is left to the next", cause
        )

    def _abort(self, err: KafkaError) -> None:
        """Abort the transaction and reread from the last commit, a few times at most."""
        assert self._producer is not None
        assert self._consumer is not None
        cause = self._delivery_error or err
        if err.fatal() or not err.txn_requires_abort():
            self._raise(cause)
        self._aborts += 1
        if self._aborts > _ABORTS_IN_A_ROW:
            raise KafkaClientError(
                f"dlq replay: {_ABORTS_IN_A_ROW} transactions in a row were aborted; "
                "nothing after the last commit was replayed",
                cause,
            )
        log.warning(
            "transaction aborted (%s); rereading from the last commit", kafka_error_text(cause)
        )
        self._producer.abort_transaction(_TIMEOUT_S)
        self._open, self._delivery_error = False, None
        self._state = self._saved.copy()
        self._consumer.assign(
            [TopicPartition(self._topic, p, self._state.position[p]) for p in self._state.active]
        )
        self._stopping.wait(min(5.0, 0.2 * 2**self._aborts))  # back off before rereading
