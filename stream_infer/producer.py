"""Producing predictions and dead letters, and turning delivery reports into progress.

Every record produced for an input carries a delivery callback bound to its
batch and row. A success counts the row as acknowledged; a failure is sorted
here into one of three fates:

- *retry*: the broker is away or slow (timeouts, leader changes): produce the
  same record again after a backoff, for as long as it takes;
- *reject*: this record can never be written as it is (too large, refused by a
  broker policy): a prediction is replaced by a dead letter with stage
  ``produce``; a dead letter too large for its topic is replaced by a stub
  that keeps the headers and points at the original;
- *fatal*: configuration, authorization or a fatal producer error: stop the
  worker without committing, so that a restart redoes the work.

Nothing blocks on a full librdkafka queue: a record that does not fit waits in
a backlog that the polling thread drains as deliveries free space, and the
number of batches in flight (hence the backlog) is bounded by backpressure.
Nothing is dropped: a row leaves the books only by an acknowledgement.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Producer

from stream_infer.envelope import Headers, SourceRecord, dead_letter_headers, error_class
from stream_infer.errors import ProduceError, Stage, kafka_error_text
from stream_infer.logging import get_logger, where
from stream_infer.offsets import Batch

__all__ = ["Deliveries", "OutputProducer", "verdict"]

log = get_logger("producer")

Verdict = Literal["retry", "reject", "fatal"]

_FATAL = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC, KafkaError._INVALID_ARG, KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.PRODUCER_FENCED, KafkaError._FENCED, KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
}  # fmt: skip
# librdkafka does not flag all of these as retriable (a delivery timeout is
# not), but each only says the broker was away or busy, not that the record is bad.
_TRANSIENT = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TIMED_OUT_QUEUE,
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError.NETWORK_EXCEPTION, KafkaError.KAFKA_STORAGE_ERROR,
    KafkaError.THROTTLING_QUOTA_EXCEEDED, KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT,
    KafkaError._QUEUE_FULL,
}  # fmt: skip
_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
_RETRY_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_STUB_VALUE_BYTES = 1024


def verdict(err: KafkaError) -> Verdict:
    """What to do about a failed delivery (see the module docstring)."""
    code = err.code()
    if err.fatal() or code in _FATAL:
        return "fatal"
    if err.retriable() or code in _TRANSIENT:
        return "retry"
    return "reject"


class OutputProducer:
    """The Kafka producer client, with its error callback turned into state."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self._conf = dict(conf)
        self._conf.setdefault("logger", get_logger("librdkafka"))
        self._conf.setdefault("error_cb", self._on_error)
        self._client = Producer(self._conf)
        self.fatal: BaseException | None = None

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = ProduceError("the producer hit a fatal error", err)
            log.error("producer fatal error: %s", kafka_error_text(err))
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            log.warning("producer: %s (retrying)", kafka_error_text(err))
        else:
            log.info("producer: %s", kafka_error_text(err))

    def produce(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None,
        on_delivery: Callable[[KafkaError | None, Any], None],
        headers: Headers | None = None,
    ) -> None:
        """Enqueue one record; raises BufferError when the queue is full."""
        self._client.produce(topic, value, key, on_delivery=on_delivery, headers=headers)

    def poll(self, timeout: float = 0.0) -> int:
        return int(self._client.poll(timeout))

    def flush(self, timeout: float) -> int:
        """Serve delivery reports until all are in or ``timeout`` passes; the rest remain."""
        return int(self._client.flush(timeout))

    def __len__(self) -> int:
        return len(self._client)


# One record to (re)produce: batch, row, dead letter or not, topic, value, key, headers.
_Pending = tuple[Batch, int, bool, str, Any, Any, Headers | None]


class Deliveries:
    """Produces a batch's outputs and books their delivery reports back onto the batch.

    ``predictions_for`` and ``dead_letter`` may be called from any thread;
    ``serve`` and ``flush`` (which run the delivery callbacks) only from the
    polling thread, so the books need no lock.
    """

    def __init__(
        self,
        producer: OutputProducer,
        output_topic: str,
        dead_letter_topic: str,
        group: str,
        model_version: str,
        worker_id: str,
    ) -> None:
        self._producer = producer
        self._output = output_topic
        self._dlq = dead_letter_topic
        self._group = group
        self._model_version = model_version
        self._worker = worker_id
        self._backlog: deque[_Pending] = deque()  # did not fit the queue yet; any thread appends
        self._retries: list[tuple[float, int, _Pending]] = []  # (due, attempt, record)
        self._attempts: dict[tuple[int, int], int] = {}
        self._rejected: list[tuple[Batch, int, bool, KafkaError]] = []
        self.fatal: BaseException | None = None
        # Acknowledged outputs; only the polling thread writes them.
        self.acked_predictions = 0
        self.acked_dead_letters = 0

    # -- producing (any thread) ---------------------------------------------------

    def _send(self, item: _Pending) -> None:
        batch, i, is_dead_letter, topic, value, key, headers = item
        if self._backlog:  # keep the order: behind what is already waiting
            self._backlog.append(item)
            return
        try:
            self._producer.produce(
                topic, value, key, partial(self._ack, batch, i, is_dead_letter), headers
            )
        except BufferError:
            self._backlog.append(item)
        except KafkaException as exc:  # refused before sending: larger than message.max.bytes
            self._refused(batch, i, is_dead_letter, exc.args[0])

    def predictions_for(
        self, batch: Batch, index: Sequence[int], payloads: Sequence[bytes]
    ) -> None:
        """Produce one prediction per row (row ``index[j]`` gets ``payloads[j]``)."""
        records, send, topic = batch.records, self._send, self._output
        for i, payload in zip(index, payloads, strict=True):
            send((batch, i, False, topic, payload, records[i].key(), None))

    def dead_letter(self, batch: Batch, i: int, stage: Stage, exc: BaseException) -> None:
        """Send row ``i`` of the batch, byte for byte, to the dead-letter topic."""
        rec: SourceRecord = batch.records[i]
        headers = dead_letter_headers(
            rec, stage, error_class(exc), str(exc),
            group=self._group, model_version=self._model_version, worker=self._worker,
        )  # fmt: skip
        log.warning(
            "dead-lettering %s (%s): %s",
            where(rec.topic(), rec.partition(), rec.offset()),
            stage,
            exc,
        )
        batch.dead_letter_headers[i] = headers  # delivery reports do not carry headers
        self._send((batch, i, True, self._dlq, rec.value(), rec.key(), headers))

    def _refused(self, batch: Batch, i: int, is_dead_letter: bool, err: KafkaError) -> None:
        """A record the client or the broker will never take as it is."""
        if not is_dead_letter:
            self.dead_letter(batch, i, "produce", ProduceError("prediction rejected", err))
        elif err.code() in _TOO_LARGE:
            self._stub(batch, i, err)
        else:
            rec = batch.records[i]
            origin = where(rec.topic(), rec.partition(), rec.offset())
            self._fail(ProduceError(f"dead letter for {origin} cannot be delivered", err))

    def _stub(self, batch: Batch, i: int, err: KafkaError) -> None:
        """A dead letter too large for its topic: keep the why and where, cut the value.

        The event stays readable in its input topic (``dlq.original.*`` says
        where, for as long as that topic retains it), so the partition moves on
        without losing the means to recover it.
        """
        rec = batch.records[i]
        value = rec.value()
        size = len(value) if value is not None else 0
        headers = [
            *dead_letter_headers(
                rec, "produce", "ProduceError",
                f"dead letter too large for the dead-letter topic ({kafka_error_text(err)}); "
                f"value cut to its first {_STUB_VALUE_BYTES} of {size} bytes",
                group=self._group, model_version=self._model_version, worker=self._worker,
            ),
            ("dlq.value.truncated", b"true"),
            ("dlq.value.size", str(size).encode()),
        ]  # fmt: skip
        log.error(
            "dead letter for %s is too large; sending a stub",
            where(rec.topic(), rec.partition(), rec.offset()),
        )
        cut = value[:_STUB_VALUE_BYTES] if value is not None else None
        batch.dead_letter_headers[i] = headers
        self._send((batch, i, True, self._dlq, cut, rec.key(), headers))

    def _fail(self, exc: BaseException) -> None:
        log.error("%s", exc)
        if self.fatal is None:
            self.fatal = exc

    # -- delivery reports (the polling thread) --------------------------------------

    def _ack(
        self, batch: Batch, i: int, is_dead_letter: bool, err: KafkaError | None, msg: Any
    ) -> None:
        if err is None:
            batch.pending -= 1
            if self._attempts:
                self._attempts.pop((batch.seq, i), None)
            if is_dead_letter:
                self.acked_dead_letters += 1
            else:
                self.acked_predictions += 1
            return
        fate = verdict(err)
        if fate == "retry":
            key = (batch.seq, i)
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            delay = _RETRY_BACKOFF_S[min(attempt, len(_RETRY_BACKOFF_S) - 1)]
            rec = batch.records[i]
            log.warning(
                "delivery for %s failed (attempt %d), retrying in %.2fs: %s",
                where(rec.topic(), rec.partition(), rec.offset()), attempt + 1, delay,
                kafka_error_text(err),
            )  # fmt: skip
            headers = batch.dead_letter_headers.get(i) if is_dead_letter else None
            item = (batch, i, is_dead_letter, msg.topic(), msg.value(), msg.key(), headers)
            self._retries.append((time.monotonic() + delay, attempt, item))
        elif fate == "reject":
            # Not from inside the callback: producing here could wait on the queue
            # that only this (polling) thread can free.
            self._rejected.append((batch, i, is_dead_letter, err))
        else:
            rec = batch.records[i]
            what = "dead letter" if is_dead_letter else "prediction"
            origin = where(rec.topic(), rec.partition(), rec.offset())
            self._fail(ProduceError(f"{what} for {origin} cannot be delivered", err))

    def serve(self, timeout: float = 0.0) -> None:
        """Poll delivery reports, then produce what is waiting: backlog, rejects, due retries."""
        self._producer.poll(timeout)
        while self._rejected:
            batch, i, is_dead_letter, err = self._rejected.pop(0)
            self._refused(batch, i, is_dead_letter, err)
        if self._retries:
            now = time.monotonic()
            due = [r for r in self._retries if r[0] <= now]
            if due:
                self._retries = [r for r in self._retries if r[0] > now]
                for _, _, item in due:
                    self._send(item)
        backlog, produce = self._backlog, self._producer.produce
        while backlog:
            batch, i, is_dead_letter, topic, value, key, headers = backlog[0]
            try:
                produce(topic, value, key, partial(self._ack, batch, i, is_dead_letter), headers)
            except BufferError:
                return  # still full: the next serve tries again
            except KafkaException as exc:
                self._refused(batch, i, is_dead_letter, exc.args[0])
            backlog.popleft()

    @property
    def waiting(self) -> int:
        """Records not yet handed to librdkafka (backlog, retries, rejects)."""
        return len(self._backlog) + len(self._retries) + len(self._rejected)

    def flush(self, timeout: float) -> int:
        """Serve until nothing is outstanding or ``timeout`` passes; returns what is left."""
        deadline = time.monotonic() + timeout
        while True:
            self.serve()
            left = deadline - time.monotonic()
            remaining = self._producer.flush(max(0.0, min(left, 0.1)))
            if (remaining == 0 and not self.waiting) or left <= 0 or self.fatal:
                return remaining + self.waiting
