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

Transactions are bounded (``dlq.transaction_records`` / ``dlq.transaction_ms``)
and handled in ``replay_txn.py``; what to do with each dead letter is decided
in ``replay_rules.py``; per-partition progress is ``replay_progress.py``. The
run ends at the partitions' last stable offsets as of its start (or never,
with ``follow``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import cast

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from stream_infer.config import Settings
from stream_infer.errors import KafkaClientError, kafka_error_text
from stream_infer.inference.envelope import SourceRecord
from stream_infer.logging import get_logger
from stream_infer.tools.replay_progress import PartitionProgress, RunState
from stream_infer.tools.replay_rules import Decision, ReplayOptions, Report, decide
from stream_infer.tools.replay_txn import TIMEOUT_S, Transactions, retrying

__all__ = ["Replay", "ReplayOptions"]

log = get_logger("replay")

Progress = Callable[[int, int | None], None]  # (records examined, records in range)


class Replay:
    """One run of ``dlq replay``; :meth:`stop` (from a signal handler) ends it after a commit."""

    def __init__(self, settings: Settings, options: ReplayOptions) -> None:
        self._settings, self._options = settings, options
        self._topic = settings.topics.dead_letter
        self.group = options.group or settings.dlq.group(settings.kafka.group_id)
        self._max_replays = options.max_replays or settings.dlq.max_replays
        self._stopping = threading.Event()
        self._topics: dict[str, int] = {}  # partition counts of the cluster's topics
        self._looked_up: set[str] = set()
        self._starts: dict[int, int] = {}
        self._ends: dict[int, int | None] = {}  # None: no end (follow)
        self._consumer: Consumer | None = None
        self._txn: Transactions | None = None  # None: dry run
        self._committed: dict[int, tuple[int, str]] = {}  # per partition, as last committed
        self._next_send = 0.0
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

    def _refresh_topics(self) -> None:
        assert self._consumer is not None
        meta = self._consumer.list_topics(timeout=TIMEOUT_S)
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
                request_timeout=TIMEOUT_S,
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
                conf = self._settings.kafka.producer_config(f"dlq-replay-{self.group}")
                conf["logger"] = get_logger("librdkafka")
                dlq = self._settings.dlq
                limits = (dlq.transaction_records, dlq.transaction_ms / 1000)
                self._txn = Transactions(conf, self.group, self._topic, *limits)
                self._txn.start()  # before reading the group's offsets (see Transactions.start)
            self._start(list(range(self._topics[self._topic])))
            total = None if self._options.follow else sum(
                max(0, (self._ends[p] or 0) - s) for p, s in self._starts.items()
            )  # fmt: skip
            while True:
                while self._state.active and not self._stopping.is_set():
                    for msg in self._consumer.consume(500, 0.2):
                        self._message(msg)
                        if self._due() and not self._commit():
                            break  # aborted: the rest of this batch is read again
                        if self._stopping.is_set():
                            break  # records not handled stay so: the commit says where
                    if self._due():
                        self._commit()
                    progress(self._examined(), total)
                # An aborted last commit puts the state back: read again, unless stopping.
                if self._commit() or self._stopping.is_set():
                    break
            if self._state.report.earlier:
                log.info(
                    "passed over %d dead letters settled by earlier runs",
                    self._state.report.earlier,
                )
            return self._state.report
        except KafkaException as exc:
            if self._txn is None:
                raise KafkaClientError("dlq replay failed", exc.args[0]) from None
            self._txn.fail(exc.args[0])
        finally:
            if self._txn is not None:
                self._txn.abort_open()
            self._consumer.close()

    def run_with_progress_bar(self) -> Report:
        """:meth:`run`, with a rich progress bar on stderr (for a terminal)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            "dlq replay", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("replay", total=None)
            return self.run(lambda done, total: bar.update(task, completed=done, total=total))

    def _start(self, partitions: list[int]) -> None:
        assert self._consumer is not None
        low, stable = self._watermarks(partitions)
        for attempt in retrying():
            with attempt:
                committed = self._consumer.committed(
                    [TopicPartition(self._topic, p) for p in partitions], timeout=TIMEOUT_S
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
            end: int | None = stable[p] if last is None else min(stable[p], last + 1)
            if self._options.follow:
                end = None if last is None else last + 1
            start = progress.committed()
            self._ends[p], self._starts[p] = end, start
            self._state.progress[p], self._state.position[p] = progress, start
            self._committed[p] = (start, progress.encode())
            if end is None or start < end:
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
            if decision.kind == "replay" and self._txn is not None:
                self._send(msg, decision)
            progress.settle(offset)
        report.add(record, decision)

    def _send(self, msg: Message, decision: Decision) -> None:
        assert self._txn is not None
        rate = self._options.rate
        if rate > 0:
            now = time.monotonic()
            if self._next_send > now:
                self._stopping.wait(self._next_send - now)  # pacing, not synchronisation
            self._next_send = max(self._next_send, time.monotonic() - 1.0) + 1.0 / rate
        self._txn.send(decision.topic, msg.key(), msg.value(), decision.headers, decision.partition)

    def _maybe_finish(self, p: int) -> None:
        end = self._ends[p]
        if end is not None and p in self._state.active and self._state.position[p] >= end:
            self._finish(p)

    def _finish(self, p: int) -> None:
        assert self._consumer is not None
        self._state.active.discard(p)
        self._consumer.pause([TopicPartition(self._topic, p)])

    # -- transactions --------------------------------------------------------------------

    def _due(self) -> bool:
        return self._txn is not None and self._txn.due()

    def _commit(self) -> bool:
        """Commit the open transaction with the changed offsets; on an abort, go back.

        Returns False after an abort: the state is then as of the last commit and
        the consumer rereads from there.
        """
        if self._txn is None:
            return True
        assert self._consumer is not None
        offsets = []
        for p, progress in self._state.progress.items():
            now = (progress.committed(), progress.encode())
            if self._committed.get(p) != now:
                offsets.append(TopicPartition(self._topic, p, now[0], metadata=now[1]))
        if self._txn.commit(offsets, self._consumer.consumer_group_metadata()):
            for tp in offsets:
                self._committed[tp.partition] = (tp.offset, tp.metadata or "")
            self._saved = self._state.copy()
            return True
        self._state = self._saved.copy()
        self._consumer.assign(
            [TopicPartition(self._topic, p, self._state.position[p]) for p in self._state.active]
        )
        self._stopping.wait(min(5.0, 0.2 * 2**self._txn.aborts))  # back off before rereading
        return False
