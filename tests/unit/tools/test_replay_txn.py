"""Which Kafka errors the replay retries in place, and which end a transaction or the run."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_infer.tools.replay_txn import retrying


def _error(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "test", **flags))


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (_error(KafkaError.NOT_COORDINATOR), True),  # coordinator moving: same call again
        (_error(KafkaError.UNSTABLE_OFFSET_COMMIT), True),  # a transaction is settling
        (_error(KafkaError._TRANSPORT, retriable=True), True),
        (_error(KafkaError._TIMED_OUT, retriable=True, txn_requires_abort=True), False),
        (_error(KafkaError._FENCED, fatal=True), False),
        (_error(KafkaError.TOPIC_AUTHORIZATION_FAILED), False),
        (ValueError("not Kafka"), False),
    ],
)
def test_only_a_busy_broker_is_retried_in_place(error: BaseException, retried: bool) -> None:
    calls = []

    def fails_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise error

    def call() -> None:
        for attempt in retrying():
            with attempt:
                fails_once()

    if retried:
        call()
        assert len(calls) == 2
    else:
        with pytest.raises(type(error)):  # the original error, not tenacity's wrapper
            call()
        assert len(calls) == 1
