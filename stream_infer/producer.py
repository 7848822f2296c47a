"""Producing predictions and dead letters, and turning delivery reports into progress.

Every record produced for an input carries a delivery callback bound to its
batch and row. A success counts the row as acknowledged; a failure is sorted
here into one of three fates:

- *retry*: the broker is away or slow (timeouts, leader changes): produce the
  same record again, for as long as it takes;
- *reject*: this record can never be written (too large): a prediction is
  replaced by a dead letter with stage ``produce``;
- *fatal*: configuration or a fenced/fatal producer: stop the worker without
  committing, so that a restart redoes the work.

Nothing is dropped: a row leaves the books only by an acknowledgement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Producer
from tenacity import Retrying, retry_if_exception_type, wait_exponential

from stream_infer.codec import Headers, SourceRecord, dead_letter_headers, error_class
from stream_infer.errors import ProduceError, Stage, kafka_error_text
from stream_infer.logging import get_logger, where
from stream_infer.offsets import Batch

__all__ = ["Deliveries", "OutputProducer", "verdict"]

log = get_logger("producer")

Verdict = Literal["retry", "reject", "fatal"]

_REJECT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
}
_FATAL = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._INVALID_ARG,
    KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.PRODUCER_FENCED,
    KafkaError._FENCED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
}


def verdict(err: KafkaError) -> Verdict:
    """What to do about a failed delivery (see the module docstring)."""
    if err.fatal():
        return "fatal"
    code = err.code()
    if code in _REJECT:
        return "reject"
    if code in _FATAL:
        return "fatal"
    return "retry"


class OutputProducer:
    """The Kafka producer, with 'queue full' handled by waiting instead of failing."""

    def __init__(self, conf: dict[str, Any], stopping: Callable[[], bool] = lambda: False) -> None:
        self._conf = dict(conf)
        self._conf.setdefault("logger", get_logger("librdkafka"))
        self._conf.setdefault("error_cb", self._on_error)
        self._client = Producer(self._conf)
        self._stopping = stopping
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
        serve: bool = False,
    ) -> None:
        """Enqueue one record, waiting while librdkafka's queue is full.

        ``serve=True`` (the consuming thread only) serves delivery reports
        while it waits, which is what frees the queue; other threads just wait
        for that thread to do so. Raises ``KafkaException`` for records that
        can never be sent (larger than ``message.max.bytes``).
        """
        client = self._client
        try:
            client.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
            return
        except BufferError:
            pass
        for attempt in Retrying(
            retry=retry_if_exception_type(BufferError),
            wait=wait_exponential(multiplier=0.002, max=0.25),
            stop=lambda _state: self._stopping(),
            reraise=True,
        ):
            with attempt:
                if serve:
                    client.poll(0)
                client.produce(topic, value, key, on_delivery=on_delivery, headers=headers)

    def poll(self, timeout: float = 0.0) -> int:
        return int(self._client.poll(timeout))

    def flush(self, timeout: float) -> int:
        """Serve delivery reports until all are in or ``timeout`` passes; the rest remain."""
        return int(self._client.flush(timeout))

    def __len__(self) -> int:
        return len(self._client)

    @property
    def client(self) -> Producer:
        return self._client


class Deliveries:
    """Produces a batch's outputs and books their delivery reports back onto the batch."""

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
        self._retries: list[tuple[Batch, int, bool, str, bytes | None, Any]] = []
        self.fatal: BaseException | None = None
        # Acknowledged outputs; only the polling thread writes them.
        self.acked_predictions = 0
        self.acked_dead_letters = 0

    # -- producing ---------------------------------------------------------

    def predictions_for(
        self, batch: Batch, index: Sequence[int], payloads: Sequence[bytes]
    ) -> list[int]:
        """Produce one prediction per row; returns the rows that could not even be enqueued."""
        records, produce, topic, ack = (
            batch.records,
            self._producer.produce,
            self._output,
            self._ack,
        )
        refused = []
        for i, payload in zip(index, payloads, strict=True):
            try:
                produce(topic, payload, records[i].key(), partial(ack, batch, i, False))
            except KafkaException as exc:
                refused.append(i)
                self.dead_letter(
                    batch, i, "produce", ProduceError("prediction refused", exc.args[0])
                )
        return refused

    def dead_letter(
        self, batch: Batch, i: int, stage: Stage, exc: BaseException, serve: bool = False
    ) -> None:
        """Send row ``i`` of the batch, byte for byte, to the dead-letter topic."""
        rec: SourceRecord = batch.records[i]
        headers = dead_letter_headers(
            rec,
            stage,
            error_class(exc),
            str(exc),
            group=self._group,
            model_version=self._model_version,
            worker=self._worker,
        )
        batch.dead_letter_headers[i] = headers
        log.warning(
            "dead-lettering %s (%s): %s",
            where(rec.topic(), rec.partition(), rec.offset()),
            stage,
            exc,
        )
        try:
            self._producer.produce(
                self._dlq,
                rec.value(),
                rec.key(),
                partial(self._ack, batch, i, True),
                headers,
                serve,
            )
        except KafkaException as err:
            origin = where(rec.topic(), rec.partition(), rec.offset())
            self._fail(ProduceError(f"dead letter for {origin} refused", err.args[0]))

    # -- delivery reports (run on the thread that polls) --------------------

    def _ack(
        self, batch: Batch, i: int, is_dead_letter: bool, err: KafkaError | None, msg: Any
    ) -> None:
        if err is None:
            batch.pending -= 1
            if is_dead_letter:
                self.acked_dead_letters += 1
            else:
                self.acked_predictions += 1
            return
        fate = verdict(err)
        rec = batch.records[i]
        origin = where(rec.topic(), rec.partition(), rec.offset())
        if fate == "retry":
            log.warning("delivery for %s failed, retrying: %s", origin, kafka_error_text(err))
            self._retries.append((batch, i, is_dead_letter, msg.topic(), msg.value(), msg.key()))
        elif fate == "reject" and not is_dead_letter:
            self.dead_letter(
                batch, i, "produce", ProduceError("prediction rejected by the broker", err)
            )
        else:
            what = "dead letter" if is_dead_letter else "prediction"
            self._fail(ProduceError(f"{what} for {origin} cannot be delivered", err))

    def _fail(self, exc: BaseException) -> None:
        log.error("%s", exc)
        if self.fatal is None:
            self.fatal = exc

    def serve(self, timeout: float = 0.0) -> None:
        """Poll delivery reports, then re-produce whatever asked for a retry."""
        self._producer.poll(timeout)
        if not self._retries:
            return
        retries, self._retries = self._retries, []
        for batch, i, is_dead_letter, topic, value, key in retries:
            headers = batch.dead_letter_headers.get(i) if is_dead_letter else None
            self._producer.produce(
                topic, value, key, partial(self._ack, batch, i, is_dead_letter), headers, serve=True
            )

    def flush(self, timeout: float) -> int:
        """Flush, serving retries, until nothing is outstanding or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            remaining = self._producer.flush(max(0.0, min(left, 0.5)))
            self.serve()
            if (remaining == 0 and not self._retries) or left <= 0 or self.fatal:
                return remaining + len(self._retries)
