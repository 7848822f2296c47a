"""The stream-infer pipeline for Faust agents: a batch of events in, one result per event out.

It is the same decode/validate -> ``infer_batch`` -> encode as the native
worker's inference thread (``inference.codec`` and ``inference.batch``), with
Faust events adapted to the ``SourceRecord`` protocol. The work runs on a
single-thread executor, so the agent's event loop keeps fetching, heartbeating
and committing while the model runs (onnxruntime releases the GIL). Producing
the results, and acknowledging the events once they are delivered, is left to
the caller: ``stream-infer run --runtime faust`` does it in
``runtimes.faust.worker``, a user's own agent does it with its own topics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_infer.config import Settings, load_settings
from stream_infer.errors import Stage
from stream_infer.inference.batch import infer_batch
from stream_infer.inference.codec import Decoder
from stream_infer.inference.envelope import (
    DeadLetterLog,
    Encoder,
    Headers,
    dead_letter_headers,
    error_class,
)
from stream_infer.inference.model import Model, load_model
from stream_infer.inference.variants import version_of
from stream_infer.logging import get_logger, where

__all__ = ["DeadLetter", "FaustRecord", "Pipeline", "Prediction", "Result"]

log = get_logger("faust")


class FaustRecord:
    """A Faust message seen through ``envelope.SourceRecord`` (confluent-kafka's shape).

    Faust keeps timestamps as float seconds; the milliseconds Kafka stored are
    recovered by rounding (exact for any epoch-millisecond value a double holds).
    """

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message

    def topic(self) -> str | None:
        return self.message.topic  # type: ignore[no-any-return]

    def partition(self) -> int | None:
        return self.message.partition  # type: ignore[no-any-return]

    def offset(self) -> int | None:
        return self.message.offset  # type: ignore[no-any-return]

    def timestamp(self) -> tuple[int, int]:
        ts = self.message.timestamp
        if ts is None:
            return 0, -1
        # confluent-kafka's types: 1 = create time, 2 = log-append time (Kafka's 0 and 1).
        return (self.message.timestamp_type or 0) + 1, round(ts * 1000.0)

    def key(self) -> bytes | None:
        return self.message.key  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self.message.value  # type: ignore[no-any-return]

    def headers(self) -> Headers | None:
        headers = self.message.headers
        if not headers:
            return None
        items = headers.items() if hasattr(headers, "items") else headers
        return [(k, v) for k, v in items]


@dataclass(frozen=True, slots=True)
class Prediction:
    """The prediction event for one input: send ``value`` with ``key`` to the output topic."""

    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that cannot be predicted: send it as it is to the dead-letter topic.

    ``key`` and ``value`` are the original bytes; ``headers`` are the original
    headers plus the ``dlq.*`` ones (SPEC.md section 3). ``stage`` and
    ``reason`` repeat two of them for the caller's logs.
    """

    key: bytes | None
    value: bytes | None
    headers: Headers
    stage: Stage
    reason: str


Result = Prediction | DeadLetter


def _message(event: Any) -> Any:
    """A Faust event's message (a message is taken as it is)."""
    return getattr(event, "message", event)


class Pipeline:
    """Decode, validate, infer and encode batches of Faust events, off the event loop.

    ``Pipeline.from_config("stream-infer.yaml")`` reads the same file as
    ``stream-infer run`` (model, batching, ``kafka.group_id`` and
    ``processing.worker_id`` for the dead-letter headers); ``process(events)``
    returns one :data:`Result` per event, in order. ``inline=True`` runs the
    work on the calling thread instead (for measurements, not for agents).
    """

    def __init__(
        self,
        settings: Settings,
        model: Model | None = None,
        *,
        inline: bool = False,
        on_call: Callable[[float | None], None] = lambda started: None,
        on_result: Callable[[int, float], None] = lambda rows, seconds: None,
        on_predicted: Callable[[dict[str, Any], list[Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        s = settings
        self.model = model or load_model(s.model, s.batching.max_batch_size)
        # The file's own version wins over the configured one, as in the native runtime.
        self.version = version_of(self.model, s.model.version, s.model.version)
        self._decoder = Decoder(self.model.signature)
        self._encoder = Encoder(s.model.name, self.version, self.model.signature.outputs)
        self._executor = (
            None
            if inline
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-infer-inference")
        )
        self._on_call = on_call
        self._on_result = on_result
        self._on_predicted = on_predicted
        self.dead_letter_log = DeadLetterLog(log)

    @classmethod
    def from_config(cls, path: str | Path | None = None, **kwargs: Any) -> Pipeline:
        """Load the configuration file (``$STREAM_INFER_CONFIG`` when None) and the model."""
        return cls(load_settings(path), **kwargs)

    async def process(self, events: Sequence[Any]) -> list[Result]:
        """One result per event (Faust events or messages), in the order given.

        Raises :class:`~stream_infer.errors.InferenceError` when the model
        fails even on its known-good warm-up input: then nothing of the batch
        may be acknowledged.
        """
        records = [FaustRecord(_message(e)) for e in events]
        if self._executor is None:
            return self.run(records)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run, records)

    def run(self, records: Sequence[FaustRecord]) -> list[Result]:
        """The synchronous part (what ``process`` hands to the executor)."""
        decoded = self._decoder.decode([r.value() for r in records])
        outcome = infer_batch(
            self.model,
            self._encoder,
            records,
            decoded,
            self._timed_predict,
            keep_predicted=self._on_predicted is not None,
        )
        if self._on_predicted is not None:
            for feeds, outputs in outcome.predicted:
                self._on_predicted(feeds, outputs)
        results: list[Any] = [None] * len(records)
        for index, payloads in outcome.predictions:
            for i, payload in zip(index, payloads, strict=True):
                results[i] = Prediction(records[i].message.key, payload)
        for i, reject in outcome.rejects:
            results[i] = self.dead_letter(records[i], reject.stage, reject)
        if outcome.failures:
            log.warning(
                "%d of %d rows failed inference on their own", len(outcome.failures), len(records)
            )
        for i, exc in outcome.failures:
            results[i] = self.dead_letter(records[i], "inference", exc)
        return results

    def dead_letter(self, event: Any, stage: Stage, exc: BaseException) -> DeadLetter:
        """The dead letter for ``event`` (e.g. stage ``produce``, for a prediction refused)."""
        record = event if isinstance(event, FaustRecord) else FaustRecord(_message(event))
        s = self.settings
        headers = dead_letter_headers(
            record, stage, error_class(exc), str(exc),
            group=s.kafka.group_id, model_version=self.version,
            worker=s.processing.worker_id,
        )  # fmt: skip
        origin = where(record.topic(), record.partition(), record.offset())
        self.dead_letter_log.dead_lettered(origin, stage, exc)
        return DeadLetter(record.key(), record.value(), headers, stage, str(exc))

    def close(self) -> None:
        """Let the model call in progress finish, then release the executor thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.dead_letter_log.flush()

    def _timed_predict(self, feeds: dict[str, Any], rows: int) -> list[Any]:
        started = time.monotonic()
        self._on_call(started)
        try:
            return self.model.predict(feeds)
        finally:
            self._on_call(None)
            self._on_result(rows, time.monotonic() - started)
