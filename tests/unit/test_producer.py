"""How delivery failures are sorted: retry, reject (dead letter / stub) or stop."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from stream_infer.producer import verdict


@pytest.mark.parametrize(
    ("code", "fate"),
    [
        (KafkaError._MSG_TIMED_OUT, "retry"),  # librdkafka does not call this retriable
        (KafkaError._TRANSPORT, "retry"),
        (KafkaError._ALL_BROKERS_DOWN, "retry"),
        (KafkaError.NOT_ENOUGH_REPLICAS, "retry"),
        (KafkaError.NOT_LEADER_FOR_PARTITION, "retry"),
        (KafkaError.REQUEST_TIMED_OUT, "retry"),
        (KafkaError.MSG_SIZE_TOO_LARGE, "reject"),
        (KafkaError.RECORD_LIST_TOO_LARGE, "reject"),
        (KafkaError.INVALID_RECORD, "reject"),
        (KafkaError.POLICY_VIOLATION, "reject"),
        (KafkaError.INVALID_TIMESTAMP, "reject"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "fatal"),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, "fatal"),
        (KafkaError._UNKNOWN_TOPIC, "fatal"),
        (KafkaError.PRODUCER_FENCED, "fatal"),
    ],
)
def test_verdicts(code: int, fate: str) -> None:
    assert verdict(KafkaError(code)) == fate


def test_fatal_flag_wins() -> None:
    assert verdict(KafkaError(KafkaError._MSG_TIMED_OUT, fatal=True)) == "fatal"
