"""The transactions of ``dlq replay``: replayed events and the replay group's offsets, atomically.

One transactional producer per replay group and dead-letter topic
(``transactional.id`` = ``dlq-replay:<group>:<topic>``): starting it aborts
whatever a killed run of that group left open, and a second run alongside
fences the first. A transaction closes after ``max_records`` events or
``max_s`` seconds, whichever comes first, and carries the group's offsets
(``send_offsets_to_transaction``), so what was replayed and what is marked
replayed are committed together or not at all.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, NoReturn

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from stream_infer.errors import KafkaClientError, kafka_error_text
from stream_infer.inference.envelope import Headers
from stream_infer.logging import get_logger

__all__ = ["TIMEOUT_S", "Transactions", "retrying"]

log = get_logger("replay")

TIMEOUT_S = 30.0
_ABORTS_IN_A_ROW = 5  # transactions aborted one after another before giving up
_BUSY = {
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.UNSTABLE_OFFSET_COMMIT,
}  # fmt: skip


def _retriable(exc: BaseException) -> bool:
    """Worth the same call again: the broker was busy, never "abort" or "fatal"."""
    err = exc.args[0] if isinstance(exc, KafkaException) else None
    if err is None or err.fatal() or err.txn_requires_abort():
        return False
    return bool(err.retriable()) or err.code() in _BUSY


def retrying() -> Retrying:
    """Retries for a minute while the broker is busy (coordinator moving, offsets unstable)."""
    return Retrying(
        retry=retry_if_exception(_retriable),
        stop=stop_after_delay(60),
        wait=wait_exponential(multiplier=0.1, max=2),
        reraise=True,  # the caller reports the Kafka error itself
    )


class Transactions:
    """The open transaction, if any, and when it is due."""

    def __init__(
        self, conf: dict[str, Any], group: str, topic: str, max_records: int, max_s: float
    ) -> None:
        self.group = group
        conf = {**conf, "transactional.id": f"dlq-replay:{group}:{topic}"}
        conf["error_cb"] = self._on_error
        self._producer = Producer(conf)
        self._max_records, self._max_s = max_records, max_s
        self._open, self._count, self._started = False, 0, 0.0
        self._last_commit = time.monotonic()
        self.aborts = 0  # in a row
        self._delivery_error: KafkaError | None = None
        self._fatal: KafkaError | None = None

    def start(self) -> None:
        """Fence older runs of this group; must come before reading the group's offsets.

        It aborts what a killed run left open, so the offsets read next are settled.
        """
        for attempt in retrying():
            with attempt:
                self._producer.init_transactions(TIMEOUT_S)

    def _on_error(self, err: KafkaError) -> None:
        # A fatal producer error reaches the caller as a bare _FATAL; the reason
        # (fenced by a newer replay, say) only comes through here.
        if err.fatal() and self._fatal is None:
            self._fatal = err
        log.log(40 if err.fatal() else 30, "replay producer: %s", kafka_error_text(err))

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = err

    def _begin(self) -> None:
        if not self._open:
            self._producer.begin_transaction()
            self._open, self._count, self._started = True, 0, time.monotonic()

    def send(
        self, topic: str, key: Any, value: Any, headers: Headers, partition: int | None
    ) -> None:
        self._begin()
        kwargs: dict[str, Any] = {"headers": headers, "on_delivery": self._delivered}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain it
        self._producer.poll(0)
        self._count += 1

    def due(self) -> bool:
        """Time to commit: the open transaction is full or old, or progress waits too long."""
        age = time.monotonic() - (self._started if self._open else self._last_commit)
        return age >= self._max_s or (self._open and self._count >= self._max_records)

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> bool:
        """Commit the open transaction with ``offsets``; False when it had to be aborted.

        After an abort the caller puts its state back as of the last commit and
        rereads from there. Fatal errors (fenced) and repeated aborts raise.
        """
        self._last_commit = time.monotonic()
        if not offsets and not self._open:
            return True
        try:
            self._begin()
            if offsets:
                self._producer.send_offsets_to_transaction(offsets, group_metadata, TIMEOUT_S)
            for attempt in retrying():  # only a retriable error may be retried here
                with attempt:
                    self._producer.commit_transaction(TIMEOUT_S)
        except KafkaException as exc:
            self._abort(exc.args[0])
            return False
        self._open, self.aborts = False, 0
        return True

    def _abort(self, err: KafkaError) -> None:
        cause = self._delivery_error or err
        if err.fatal() or not err.txn_requires_abort():
            self.fail(cause)
        self.aborts += 1
        if self.aborts > _ABORTS_IN_A_ROW:
            raise KafkaClientError(
                f"dlq replay: {_ABORTS_IN_A_ROW} transactions in a row were aborted; "
                "what it did not commit is left to the next run",
                cause,
            )
        log.warning(
            "transaction aborted (%s); rereading from the last commit", kafka_error_text(cause)
        )
        self._producer.abort_transaction(TIMEOUT_S)
        self._open, self._delivery_error = False, None

    def abort_open(self) -> None:
        """On the way out after an error: abort at once rather than leave the original
        topics' read_committed readers waiting for the transaction timeout."""
        if self._open:
            with contextlib.suppress(KafkaException):
                self._producer.abort_transaction(5)

    def fail(self, err: KafkaError) -> NoReturn:
        """Raise one clear error, naming a fencing replay when that is the cause."""
        if err.code() == KafkaError._FATAL:
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
