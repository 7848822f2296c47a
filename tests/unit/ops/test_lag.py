"""Which errors of a lag reading are asked again: a coordinator still loading, not a typo."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_infer.ops.lag import _coordinator_moving


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    ],
)
def test_a_loading_or_moving_coordinator_is_asked_again(code: int) -> None:
    assert _coordinator_moving(KafkaException(KafkaError(code)))


@pytest.mark.parametrize(
    "code", [KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART]
)
def test_a_refusal_is_reported_at_once(code: int) -> None:
    assert not _coordinator_moving(KafkaException(KafkaError(code)))
    assert not _coordinator_moving(LookupError("topic 'x' does not exist"))
