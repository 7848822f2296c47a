"""Producing predictions and dead letters, and turning delivery reports into progress.

Every record produced for an input carries a delivery callback bound to its
batch and row. A success counts the row as acknowledged; a failure meets the
fate ``producer.verdict`` gives it: retried after a backoff, replaced (a dead
letter for a refused prediction, a stub for an oversize dead letter), or the
end of the worker.

Nothing blocks on a full librdkafka queue: a record that does not fit waits in
a backlog that the polling thread drains as deliveries free space, and the
number of batches in flight (hence the backlog) is bounded by backpressure.
Every decision about a failed record is taken on the polling thread, never
inside the producing call or the delivery callback.
Nothing is dropped: a row leaves the books only by an acknowledgement.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from stream_infer.errors import ProduceError, Stage, kafka_error_text
from stream_infer.inference.envelope import (
    DeadLetterLog,
    Headers,
    SourceRecord,
    dead_letter_headers,
    dead_letter_stub,
    error_class,
)
from stream_infer.kafka.offsets import Batch
from stream_infer.kafka.producer import (
    DEAD_LETTER,
    PREDICTION,
    RETRY_BACKOFF_S,
    STUB,
    STUB_VALUE_BYTES,
    TOO_LARGE,
    TRANSIENT,
    TXN_STATE,
    OutputProducer,
    Verdict,
    verdict,
)
from stream_infer.kafka.security import AUTHORIZATION, denied
from stream_infer.logging import get_logger

__all__ = ["Deliveries"]

log = get_logger("producer")

# A failure seen while aborting is judged as final (no retries left to give it).
_UNKNOWN_ATTEMPTS_SEEN = 1_000


# One record to (re)produce: batch, row, kind, topic, value, key, headers.
_Pending = tuple[Batch, int, int, str, Any, Any, Headers | None]


class Deliveries:
    """Produces a batch's outputs and books their delivery reports back onto the batch.

    ``predictions_for`` and ``dead_letter`` may be called from any thread: they
    only ever hand records to librdkafka or to thread-safe queues. ``serve``
    and ``flush`` (which run the delivery callbacks and decide the fate of
    failed records) run on the polling thread only, so the books need no lock.
    """

    def __init__(
        self,
        producer: OutputProducer,
        output_topic: str,
        dead_letter_topic: str,
        group: str,
        model_version: str,
        worker_id: str,
        stage_counts: dict[str, int] | None = None,
        on_batch_done: Callable[[Batch], None] | None = None,
        transactional: bool = False,
    ) -> None:
        self._producer = producer
        # Exactly once: a failed delivery dooms the whole transaction (librdkafka has
        # retried it for transaction.timeout.ms already), so it is never retried here;
        # it is noted, the transaction is aborted, and the batch is consumed again. A
        # record refused for good is remembered by its input's position, so that the
        # second time round it becomes a dead letter (or a stub) instead of aborting
        # again and again.
        self.transactional = transactional
        self.txn_failure: KafkaError | None = None
        self.poisoned: dict[tuple[str | None, int | None, int | None], tuple[int, KafkaError]] = {}
        self._gate: Callable[[], AbstractContextManager[object]] = nullcontext
        self._output = output_topic
        self._dlq = dead_letter_topic
        self._group = group
        self.model_version = model_version  # dlq.model.version: follows a hot reload
        self._worker = worker_id
        # Filled from any thread (deque appends are atomic), drained by the poller.
        self._backlog: deque[_Pending] = deque()  # did not fit librdkafka's queue yet
        # (record, error, reported by the broker rather than refused by the client)
        self._refusals: deque[tuple[_Pending, KafkaError, bool]] = deque()
        # Poller only.
        self._retries: list[tuple[float, _Pending]] = []  # (due, record)
        self._attempts: dict[tuple[int, int], int] = {}
        self.fatal: BaseException | None = None
        self.acked_predictions = 0
        self.acked_dead_letters = 0
        # Dead letters decided, by stage (the metrics read it); a batch once fully acknowledged.
        self.stage_counts: dict[str, int] = {} if stage_counts is None else stage_counts
        self._on_batch_done = on_batch_done
        # The worker calls dead_letter_log.flush() at shutdown for the last window.
        self.dead_letter_log = DeadLetterLog(log, dead_letter_topic)

    # -- producing (any thread) ---------------------------------------------------

    def _send(self, item: _Pending) -> None:
        if self._backlog:  # keep the order: behind what is already waiting
            self._backlog.append(item)
            return
        batch, i, kind, topic, value, key, headers = item
        try:
            self._producer.produce(topic, value, key, partial(self._ack, batch, i, kind), headers)
        except BufferError:
            self._backlog.append(item)
        except KafkaException as exc:  # refused before sending (e.g. > message.max.bytes)
            self._refusals.append((item, exc.args[0], False))

    def predictions_for(
        self, batch: Batch, index: Sequence[int], payloads: Sequence[bytes]
    ) -> None:
        """Produce one prediction per row (row ``index[j]`` gets ``payloads[j]``).

        One ``produce_batch`` call and one callback object for the whole batch:
        no per-row argument parsing or closure. Measured: 0.75 µs a record,
        callbacks included, against 1.45 µs for a ``produce`` with a per-row
        callback. A failed delivery names its row through the prediction's own
        ``source`` field (see ``_locate``).
        """
        if self.poisoned:
            index, payloads = self._unpoisoned(batch, index, payloads)
        topic, keys = self._output, batch.origins.keys
        if self._backlog:  # keep the order: behind what is already waiting
            self._backlog.extend(
                (batch, i, PREDICTION, topic, p, keys[i], None)
                for i, p in zip(index, payloads, strict=True)
            )
            return
        msgs: list[dict[str, Any]] = [
            {"value": p, "key": keys[i]} for i, p in zip(index, payloads, strict=True)
        ]
        if self._producer.produce_batch(topic, msgs, self._acker(batch)) == len(msgs):
            return
        for i, msg in zip(index, msgs, strict=True):
            err = msg.get("_error")
            if err is None:
                continue
            item = (batch, i, PREDICTION, topic, msg["value"], msg["key"], None)
            if err.code() == KafkaError._QUEUE_FULL:
                self._backlog.append(item)
            else:  # refused before sending (e.g. > message.max.bytes)
                self._refusals.append((item, err, False))

    def _unpoisoned(
        self, batch: Batch, index: Sequence[int], payloads: Sequence[bytes]
    ) -> tuple[list[int], list[bytes]]:
        """Exactly once: rows whose prediction the broker refused before are dead letters now."""
        keep_index, keep = [], []
        for i, payload in zip(index, payloads, strict=True):
            known = self.poisoned.get(batch.position(i))
            if known is not None and known[0] == PREDICTION:
                self.dead_letter(batch, i, "produce", ProduceError("prediction rejected", known[1]))
            else:
                keep_index.append(i)
                keep.append(payload)
        return keep_index, keep

    def _acker(self, batch: Batch) -> Callable[[KafkaError | None, Any], None]:
        """The delivery callback of every prediction of ``batch``."""
        refusals, done = self._refusals, self._batch_acknowledged

        def ack(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                batch.pending -= 1
                if not batch.pending:
                    done(batch)
                return
            i = batch.locate(msg)
            if i is None:
                self._fail(ProduceError("a failed prediction cannot be traced to its input", err))
                return
            refusals.append(
                ((batch, i, PREDICTION, msg.topic(), msg.value(), msg.key(), None), err, True)
            )

        return ack

    def dead_letter(self, batch: Batch, i: int, stage: Stage, exc: BaseException) -> None:
        """Send row ``i`` of the batch, byte for byte, to the dead-letter topic."""
        rec: SourceRecord = batch.records[i]
        self.stage_counts[stage] = self.stage_counts.get(stage, 0) + 1
        batch.dead_letters += 1
        known = self.poisoned.get(batch.position(i)) if self.poisoned else None
        if known is not None and known[0] == DEAD_LETTER and known[1].code() in TOO_LARGE:
            self._stub(batch, i, known[1])
            return
        headers = dead_letter_headers(
            rec, stage, error_class(exc), str(exc),
            group=self._group, model_version=self.model_version, worker=self._worker,
        )  # fmt: skip
        self.dead_letter_log.dead_lettered(batch.where(i), stage, exc)
        batch.dead_letter_headers[i] = headers  # delivery reports do not carry headers
        self._send((batch, i, DEAD_LETTER, self._dlq, rec.value(), rec.key(), headers))

    # -- deciding (the polling thread) --------------------------------------------------

    def _refused(self, batch: Batch, i: int, kind: int, err: KafkaError) -> None:
        """A record the client or the broker will never take as it is."""
        if kind == PREDICTION:
            self.dead_letter(batch, i, "produce", ProduceError("prediction rejected", err))
        elif kind == DEAD_LETTER and err.code() in TOO_LARGE:
            self._stub(batch, i, err)
        else:
            self._undeliverable(batch, i, kind, err)

    def _undeliverable(self, batch: Batch, i: int, kind: int, err: KafkaError) -> None:
        what = ("prediction", "dead letter", "dead-letter stub")[kind]
        if err.code() in AUTHORIZATION:
            dlq = kind != PREDICTION
            topic, key = (self._dlq, "dead_letter") if dlq else (self._output, "output")
            resource, grant = f"topic '{topic}' (topics.{key})", "WRITE and DESCRIBE on it"
            line = denied(err.name(), self._producer.conf, "write to", resource, grant)
            self._fail(ProduceError(f"{line}; {what} for {batch.where(i)} not delivered"))
            return
        self._fail(ProduceError(f"{what} for {batch.where(i)} cannot be delivered", err))

    def _stub(self, batch: Batch, i: int, err: KafkaError) -> None:
        """A dead letter too large for its topic: a small stub in its place (see envelope)."""
        key, cut, headers = dead_letter_stub(
            batch.records[i], kafka_error_text(err), STUB_VALUE_BYTES,
            group=self._group, model_version=self.model_version, worker=self._worker,
        )  # fmt: skip
        log.error("dead letter for %s is too large; sending a stub", batch.where(i))
        batch.dead_letter_headers[i] = headers
        self._send((batch, i, STUB, self._dlq, cut, key, headers))

    def _fail(self, exc: BaseException) -> None:
        log.error("%s", exc)
        if self.fatal is None:
            self.fatal = exc

    def _failed(self, item: _Pending, err: KafkaError, reported: bool) -> None:
        """A failed record, from a delivery report or a refused produce call."""
        batch, i, kind = item[0], item[1], item[2]
        key = (batch.seq, i)
        attempt = self._attempts.get(key, 0)
        fate = verdict(err, attempt)
        if self.transactional and (reported or err.code() in TXN_STATE):
            self._doomed(batch, i, kind, err, fate)
            return
        if fate == "retry":
            self._attempts[key] = attempt + 1
            delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
            log.warning(
                "delivery for %s failed (attempt %d), retrying in %.2fs: %s",
                batch.where(i), attempt + 1, delay, kafka_error_text(err),
            )  # fmt: skip
            self._retries.append((time.monotonic() + delay, item))
        elif fate == "reject":
            self._refused(batch, i, kind, err)
        else:
            self._undeliverable(batch, i, kind, err)

    def _doomed(self, batch: Batch, i: int, kind: int, err: KafkaError, fate: Verdict) -> None:
        """Exactly once: a delivery failed inside the open transaction, which must abort."""
        if self.txn_failure is None:
            self.txn_failure = err
            log.warning(
                "delivery for %s failed in the transaction (%s): aborting it and consuming "
                "again", batch.where(i), kafka_error_text(err),
            )  # fmt: skip
        if err.code() in TXN_STATE:
            return  # the transaction (or the producer) is done for: all of it is redone
        if fate == "reject" or (fate == "retry" and err.code() not in TRANSIENT):
            self.poisoned[batch.position(i)] = (kind, err)
        elif fate == "fatal":
            self._undeliverable(batch, i, kind, err)

    def acknowledge(self, batch: Batch) -> None:
        """Exactly once: the batch's transaction committed, so all its outputs are acknowledged."""
        batch.pending = 0
        self._batch_acknowledged(batch)

    def _batch_acknowledged(self, batch: Batch) -> None:
        dead = batch.dead_letters
        self.acked_predictions += len(batch.records) - dead
        self.acked_dead_letters += dead
        if self._on_batch_done is not None:
            self._on_batch_done(batch)

    def salvage(self) -> None:
        """Exactly once, before an abort: learn from the failures reported so far.

        The delivery reports of a failing transaction often arrive while it
        commits, after the last serve; a record refused for good must still be
        remembered (``poisoned``), or the redo would fail the same way for ever.
        Nothing is produced here: everything on its way is redone anyway.
        """
        refusals = self._refusals
        while refusals:
            item, err, reported = refusals.popleft()
            if reported:
                batch, i, kind = item[0], item[1], item[2]
                self._doomed(batch, i, kind, err, verdict(err, _UNKNOWN_ATTEMPTS_SEEN))

    def reset(self) -> None:
        """Exactly once: the transaction was aborted; whatever was on its way belongs to it."""
        self._backlog.clear()
        self._refusals.clear()
        self._retries.clear()
        self._attempts.clear()
        self.txn_failure = None

    def set_gate(self, gate: Callable[[], AbstractContextManager[object]]) -> None:
        """Held while serve() produces (exactly once: inside the open transaction)."""
        self._gate = gate

    def _ack(self, batch: Batch, i: int, kind: int, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            batch.pending -= 1
            if self._attempts:
                self._attempts.pop((batch.seq, i), None)
            if not batch.pending:
                self._batch_acknowledged(batch)
            return
        headers = batch.dead_letter_headers.get(i) if kind != PREDICTION else None
        item = (batch, i, kind, msg.topic(), msg.value(), msg.key(), headers)
        # Decided on the next serve, not here: producing from inside the callback
        # could wait on the queue that only this thread can free.
        self._refusals.append((item, err, True))

    def serve(self, timeout: float = 0.0) -> None:
        """Poll delivery reports, then act: failures, due retries, the backlog."""
        self._producer.poll(timeout)
        if self._refusals or self._retries or self._backlog:
            with self._gate():
                self.handle()

    def handle(self) -> None:
        """Act on failures, due retries and the backlog (the gate, if any, is held)."""
        refusals = self._refusals
        while refusals:
            self._failed(*refusals.popleft())
        if self._retries:
            now = time.monotonic()
            if any(due <= now for due, _ in self._retries):
                due = [item for when, item in self._retries if when <= now]
                self._retries = [r for r in self._retries if r[0] > now]
                for item in due:
                    self._send(item)
        backlog, produce, ack = self._backlog, self._producer.produce, self._ack
        while backlog:
            batch, i, kind, topic, value, key, headers = item = backlog[0]
            try:
                produce(topic, value, key, partial(ack, batch, i, kind), headers)
            except BufferError:
                return  # still full: the next serve tries again
            except KafkaException as exc:
                refusals.append((item, exc.args[0], False))
            backlog.popleft()

    def drain(self, timeout: float) -> None:
        """Hand every waiting record to librdkafka (the gate is held: a commit is due)."""
        deadline = time.monotonic() + timeout
        while self._refusals or self._backlog or self._retries:
            self.handle()
            if time.monotonic() >= deadline:
                return
            if self._backlog:
                self._producer.poll(0.01)  # room in the queue comes with acknowledgements
            elif self._retries:
                self._producer.poll(0.05)

    @property
    def waiting(self) -> int:
        """Records not yet handed to librdkafka (backlog, retries, refusals)."""
        return len(self._backlog) + len(self._retries) + len(self._refusals)

    def flush(self, timeout: float) -> int:
        """Serve until nothing is outstanding or ``timeout`` passes; returns what is left."""
        deadline = time.monotonic() + timeout
        producer = self._producer
        while True:
            self.serve()
            left = deadline - time.monotonic()
            queued = len(producer)
            if (queued == 0 and not self.waiting) or left <= 0 or self.fatal:
                return queued + self.waiting
            if queued:
                producer.flush(min(left, 0.1))
            else:  # only retries not yet due: wait for them, not in a spin
                producer.poll(min(left, 0.05))
