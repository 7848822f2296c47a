"""The Kafka producer client, and what a failed delivery means (the fate of a record).

A failure is sorted into one of three fates (``verdict``):

- *retry*: the broker is away or slow (timeouts, leader changes): produce the
  same record again after a backoff, for as long as it takes;
- *reject*: this record can never be written as it is (too large, refused by a
  broker policy): a prediction is replaced by a dead letter with stage
  ``produce``; a dead letter too large for its topic is replaced by a small
  stub that says why and points at the original (a stub is final);
- *fatal*: configuration, authorization or a fatal producer error: stop the
  worker without committing, so that a restart redoes the work.

What to do about each fate, per record, is ``deliveries.Deliveries``' job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import KafkaError, Producer, TopicPartition

from stream_infer.errors import ProduceError, kafka_error_text
from stream_infer.inference.envelope import Headers
from stream_infer.kafka.security import authentication_failure
from stream_infer.logging import get_logger

__all__ = [
    "DEAD_LETTER",
    "FENCED",
    "PREDICTION",
    "RETRY_BACKOFF_S",
    "STUB",
    "STUB_VALUE_BYTES",
    "TOO_LARGE",
    "TRANSIENT",
    "TXN_STATE",
    "OutputProducer",
    "Verdict",
    "verdict",
]

log = get_logger("producer")

Verdict = Literal["retry", "reject", "fatal"]

_FATAL = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION, KafkaError._INVALID_ARG,
    KafkaError.INVALID_REQUIRED_ACKS, KafkaError.PRODUCER_FENCED, KafkaError._FENCED,
    KafkaError._FATAL, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
}  # fmt: skip
# Delivery reports never say "retriable" (confluent-kafka builds them without
# the flag), so the transient codes are listed: each only says that the broker
# was away or busy, not that the record is bad.
TRANSIENT = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TIMED_OUT_QUEUE,
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError.NETWORK_EXCEPTION, KafkaError.KAFKA_STORAGE_ERROR,
    KafkaError.THROTTLING_QUOTA_EXCEEDED, KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT,
    KafkaError._QUEUE_FULL, KafkaError.UNKNOWN,
}  # fmt: skip
# What the broker says of a record it will never take as it is.
TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
_REJECT = TOO_LARGE | {
    KafkaError.INVALID_RECORD, KafkaError.POLICY_VIOLATION, KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE, KafkaError.INVALID_TIMESTAMP,
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
}  # fmt: skip
# A transactional producer that another instance (or the coordinator, after a
# transaction timeout) fenced: exactly once rebuilds it (kafka/transactions.py).
FENCED = {
    KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.INVALID_PRODUCER_ID_MAPPING, KafkaError._FATAL,
}  # fmt: skip
# Refused by the client because the transaction is already doomed (or fenced): the
# record is not at fault, and the abort that follows redoes it.
TXN_STATE = FENCED | {KafkaError._STATE}
_UNKNOWN_ATTEMPTS = 8  # an unrecognised error is retried this often, then the record is rejected
RETRY_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
STUB_VALUE_BYTES = 1024

# What a pending record is: its fate on refusal depends on it.
PREDICTION, DEAD_LETTER, STUB = 0, 1, 2


def verdict(err: KafkaError, attempts: int = 0) -> Verdict:
    """What to do about a failed delivery (see the module docstring).

    An error code this list does not know is retried a few times (with
    backoff), then taken as a refusal: neither a stalled partition nor a good
    event dead-lettered at the first hiccup.
    """
    code = err.code()
    if err.fatal() or code in _FATAL:
        return "fatal"
    if err.retriable() or code in TRANSIENT:
        return "retry"
    if code in _REJECT:
        return "reject"
    return "retry" if attempts < _UNKNOWN_ATTEMPTS else "reject"


class OutputProducer:
    """The Kafka producer client, with its error callback turned into state."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self._conf = dict(conf)
        self._conf.setdefault("logger", get_logger("librdkafka"))
        self._conf.setdefault("error_cb", self._on_error)
        self._client = Producer(self._conf)
        self.fatal: BaseException | None = None

    @property
    def conf(self) -> dict[str, Any]:
        """The client's configuration (secrets included: for naming the principal only)."""
        return self._conf

    def _on_error(self, err: KafkaError) -> None:
        refused = authentication_failure(err, self._conf)
        if refused is not None:  # a wrong password or CA does not fix itself: stop
            self.fatal = self.fatal or ProduceError(refused)
            log.error("%s", refused)
        elif err.fatal():
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

    def produce_batch(
        self,
        topic: str,
        messages: list[dict[str, Any]],
        on_delivery: Callable[[KafkaError | None, Any], None],
    ) -> int:
        """Enqueue many records in one call; those that did not fit carry ``_error``."""
        return int(self._client.produce_batch(topic, messages, on_delivery=on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        return int(self._client.poll(timeout))

    # -- transactions (exactly once; see kafka/transactions.py) ---------------------

    def init_transactions(self, timeout: float) -> None:
        self._client.init_transactions(timeout)

    def begin_transaction(self) -> None:
        self._client.begin_transaction()

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout: float
    ) -> None:
        self._client.send_offsets_to_transaction(offsets, group_metadata, timeout)

    def commit_transaction(self, timeout: float) -> None:
        self._client.commit_transaction(timeout)

    def abort_transaction(self, timeout: float) -> None:
        self._client.abort_transaction(timeout)

    def rebuild(self) -> None:
        """A new client with the same configuration (and transactional id), after a fatal error.

        The old one is dropped without a flush: a fenced producer can deliver nothing.
        """
        self._client = Producer(self._conf)
        self.fatal = None

    def flush(self, timeout: float) -> int:
        """Serve delivery reports until all are in or ``timeout`` passes; the rest remain."""
        return int(self._client.flush(timeout))

    def __len__(self) -> int:
        return len(self._client)
