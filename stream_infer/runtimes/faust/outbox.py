"""Producing a batch's results through Faust's producer, and waiting until all are delivered.

The fate of a failed record is the native producer's (``kafka.producer.verdict``):
aiokafka's exception is read as the Kafka error code it carries, so both
runtimes retry, reject and stop on the same codes and name them the same way in
logs and dead-letter headers (``[MSG_SIZETOO_LARGE]``):

- *retry*: the broker is away or slow: send the same record again after a
  backoff, for as long as it takes;
- *reject*: a prediction the broker will never take becomes a dead letter with
  stage ``produce``; a dead letter too large for its topic becomes a stub;
- *fatal*: anything else (a dead letter refused for another reason, a stub
  refused, authorization): the batch is never acknowledged and the worker stops.

A batch counts as delivered only when every one of its records is; only then
may its events be acknowledged (``worker`` does that, in consumption order).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import errors as aioerrors
from confluent_kafka import KafkaError

from stream_infer.config import Settings
from stream_infer.errors import ProduceError, kafka_error_text
from stream_infer.inference.envelope import Headers, dead_letter_stub
from stream_infer.kafka.producer import (
    DEAD_LETTER,
    PREDICTION,
    RETRY_BACKOFF_S,
    STUB,
    STUB_VALUE_BYTES,
    TOO_LARGE,
    verdict,
)
from stream_infer.logging import get_logger, where
from stream_infer.runtimes.faust.pipeline import DeadLetter, FaustRecord, Pipeline, Result

__all__ = ["FaustBatch", "Outbox", "kafka_error"]

log = get_logger("faust")

# One record to (re)send: kind, topic, key, value, headers.
_Item = tuple[int, str, Any, Any, Headers | None]


@dataclass(eq=False)
class FaustBatch:
    """The events of one ``noack_take`` batch and what was produced for each of them."""

    events: list[Any]
    records: list[FaustRecord]
    results: list[Result] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    born: float = field(default_factory=time.monotonic)
    produced_at: float | None = None
    dead_letters: int = 0

    def origin(self, i: int) -> str:
        rec = self.records[i]
        return where(rec.topic(), rec.partition(), rec.offset())


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The Kafka error an aiokafka (or Faust) exception stands for; None if it is no Kafka error.

    Broker errors carry their protocol code (``errno``), which is librdkafka's
    code too; the client's own timeouts and lost connections are its transport
    and timeout codes.
    """
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, aioerrors.KafkaTimeoutError | asyncio.TimeoutError):
        return KafkaError(KafkaError._MSG_TIMED_OUT, f"{type(cause).__name__}: {cause}")
    if isinstance(cause, aioerrors.KafkaConnectionError | aioerrors.NoBrokersAvailable):
        return KafkaError(KafkaError._TRANSPORT, f"{type(cause).__name__}: {cause}")
    if isinstance(cause, aioerrors.UnknownError):
        # aiokafka answers UnknownError for every code it has no class for (87,
        # INVALID_RECORD, among them) and drops the code: not known to be transient,
        # so it gets the few retries of an unrecognised error, then counts as a refusal.
        return KafkaError(
            KafkaError._FAIL, "the broker refused the record with an error aiokafka does not name"
        )
    if isinstance(cause, aioerrors.KafkaError):
        errno = getattr(cause, "errno", None)
        code = errno if isinstance(errno, int) and errno > 0 else KafkaError._FAIL
        return KafkaError(code, str(cause), retriable=bool(cause.retriable))
    return None


class Outbox:
    """Sends results to the output and dead-letter topics; ``settle`` waits for every one."""

    def __init__(
        self,
        producer: Any,
        settings: Settings,
        pipeline: Pipeline,
        stage_counts: dict[str, int],
    ) -> None:
        self._producer = producer
        self._settings = settings
        self._pipeline = pipeline
        self._output = settings.topics.output
        self._dlq = settings.topics.dead_letter
        self.stage_counts = stage_counts

    async def send(self, batch: FaustBatch) -> None:
        """Hand every result of the batch to the producer (returns before delivery)."""
        output, dlq = self._output, self._dlq
        items = batch.items = []
        for result in batch.results:
            if type(result) is DeadLetter:
                items.append((DEAD_LETTER, dlq, result.key, result.value, result.headers))
                self._count(batch, result.stage)
            else:
                items.append((PREDICTION, output, result.key, result.value, None))
        batch.futures = [await self._produce(batch, i) for i in range(len(items))]
        batch.produced_at = time.monotonic()

    def _count(self, batch: FaustBatch, stage: str) -> None:
        batch.dead_letters += 1
        self.stage_counts[stage] = self.stage_counts.get(stage, 0) + 1

    async def _produce(self, batch: FaustBatch, i: int) -> asyncio.Future[Any]:
        _, topic, key, value, headers = batch.items[i]
        try:
            fut: asyncio.Future[Any] = await self._producer.send(
                topic, key, value, None, None, headers
            )
        except Exception as exc:  # refused before sending (e.g. larger than max_request_size)
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
        return fut

    async def settle(self, batch: FaustBatch) -> None:
        """Wait until every record of the batch is delivered, retrying and replacing as needed.

        Raises :class:`ProduceError` for a record that can neither be delivered
        nor replaced: the batch must then never be acknowledged.
        """
        todo = list(range(len(batch.futures)))
        attempts: dict[int, int] = {}
        while todo:
            outcomes = await asyncio.gather(
                *(batch.futures[i] for i in todo), return_exceptions=True
            )
            again: list[int] = []
            delay = 0.0
            for i, outcome in zip(todo, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    continue
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                err = kafka_error(outcome)
                kind = batch.items[i][0]
                if err is None:
                    raise ProduceError(f"{_WHAT[kind]} for {batch.origin(i)} failed: {outcome!r}")
                attempt = attempts.get(i, 0)
                fate = verdict(err, attempt)
                if fate == "retry":
                    attempts[i] = attempt + 1
                    pause = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                    delay = max(delay, pause)
                    log.warning(
                        "delivery for %s failed (attempt %d), retrying in %.2fs: %s",
                        batch.origin(i), attempt + 1, pause, kafka_error_text(err),
                    )  # fmt: skip
                elif fate == "reject" and kind == PREDICTION:
                    self._replace(batch, i, self._refused_prediction(batch, i, err))
                elif fate == "reject" and kind == DEAD_LETTER and err.code() in TOO_LARGE:
                    self._replace(batch, i, self._stub(batch, i, err))
                else:
                    raise ProduceError(
                        f"{_WHAT[kind]} for {batch.origin(i)} cannot be delivered", err
                    )
                again.append(i)
            if delay:
                await asyncio.sleep(delay)
            for i in again:
                batch.futures[i] = await self._produce(batch, i)
            todo = again

    def _replace(self, batch: FaustBatch, i: int, item: _Item) -> None:
        batch.items[i] = item

    def _refused_prediction(self, batch: FaustBatch, i: int, err: KafkaError) -> _Item:
        letter = self._pipeline.dead_letter(
            batch.records[i], "produce", ProduceError("prediction rejected", err)
        )
        batch.results[i] = letter
        self._count(batch, "produce")
        return DEAD_LETTER, self._dlq, letter.key, letter.value, letter.headers

    def _stub(self, batch: FaustBatch, i: int, err: KafkaError) -> _Item:
        s = self._settings
        key, value, headers = dead_letter_stub(
            batch.records[i], kafka_error_text(err), STUB_VALUE_BYTES,
            group=s.kafka.group_id, model_version=self._pipeline.version,
            worker=s.processing.worker_id,
        )  # fmt: skip
        log.error("dead letter for %s is too large; sending a stub", batch.origin(i))
        return STUB, self._dlq, key, value, headers


_WHAT = ("prediction", "dead letter", "dead-letter stub")
