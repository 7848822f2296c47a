"""How delivery failures are sorted: retry, reject (dead letter / stub) or stop."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import KafkaError

from stream_infer.kafka.producer import verdict
from tests.records import Record


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


class _Scripted:
    """Stands in for librdkafka's queue: each produce is answered at the next poll,
    with the next scripted error (None = delivered). No broker behaviour is claimed."""

    def __init__(self, errors: list[KafkaError | None]) -> None:
        self.errors = errors
        self.sent: list[tuple[str, object, object, object]] = []
        self.queue: list[tuple[object, Record]] = []

    def produce(self, topic, value, key, on_delivery, headers=None) -> None:
        self.sent.append((topic, value, key, headers))
        self.queue.append((on_delivery, Record(topic_=topic, value_=value, key_=key)))

    def produce_batch(self, topic, messages, on_delivery) -> int:
        for m in messages:
            self.produce(topic, m["value"], m["key"], on_delivery)
        return len(messages)

    def poll(self, timeout: float = 0.0) -> int:
        queue, self.queue = self.queue, []
        for callback, msg in queue:
            callback(self.errors.pop(0) if self.errors else None, msg)
        return len(queue)

    def flush(self, timeout: float) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self.queue)


def _deliveries(errors: list[KafkaError | None]):
    from stream_infer.kafka.deliveries import Deliveries

    fake = _Scripted(errors)
    return Deliveries(fake, "out", "dlq", "g", "1", "w"), fake  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries come due at once, so the decisions can be stepped through without waiting."""
    monkeypatch.setattr("stream_infer.kafka.deliveries.RETRY_BACKOFF_S", (0.0,))


def _prediction(offset: int) -> bytes:
    """A prediction payload as the encoder writes it: its source names the row."""
    return orjson.dumps({"source": {"topic": "events", "partition": 0, "offset": offset}})


def _drain(deliveries, rounds: int = 20) -> None:
    for _ in range(rounds):
        deliveries.serve()
        if not deliveries.waiting and not deliveries._producer.queue:
            return


def test_a_too_large_prediction_becomes_a_dead_letter_then_a_final_stub() -> None:
    from stream_infer.kafka.offsets import Batch

    big = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    deliveries, fake = _deliveries([big, big, big])
    batch = Batch(1, [Record(7, value_=b"x" * 5000, headers_=[("trace", b"1")])])
    deliveries.predictions_for(batch, [0], [_prediction(7)])
    _drain(deliveries)
    topics = [t for t, *_ in fake.sent]
    assert topics == ["out", "dlq", "dlq"]  # prediction, dead letter, stub: then it stops
    stub_headers = dict(fake.sent[2][3])
    assert stub_headers["dlq.value.truncated"] == b"true"
    assert stub_headers["dlq.headers.dropped"] == b"1" and "trace" not in stub_headers
    assert len(fake.sent[2][1]) == 1024
    assert isinstance(deliveries.fatal, Exception)  # the stub was refused too: stop
    assert "dead-letter stub" in str(deliveries.fatal)
    assert batch.pending == 1  # never counted as delivered


def test_transient_failures_are_retried_until_delivered() -> None:
    from stream_infer.kafka.offsets import Batch

    timeout = KafkaError(KafkaError._MSG_TIMED_OUT)
    deliveries, fake = _deliveries([timeout, timeout, None])
    batch = Batch(1, [Record(7, value_=b"{}")])
    deliveries.predictions_for(batch, [0], [_prediction(7)])
    _drain(deliveries)
    assert [t for t, *_ in fake.sent] == ["out", "out", "out"]
    assert batch.pending == 0 and deliveries.fatal is None
    assert deliveries.acked_predictions == 1


def test_an_unknown_error_is_retried_a_few_times_then_rejected() -> None:
    unknown = KafkaError(KafkaError.INVALID_PRODUCER_EPOCH)  # not in any list
    assert [verdict(unknown, n) for n in (0, 7, 8)] == ["retry", "retry", "reject"]


def test_dead_letters_are_logged_once_per_kind_then_summed_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stream_infer.errors import DecodeError, ValidationError
    from stream_infer.kafka.offsets import Batch
    from stream_infer.logging import configure_logging

    configure_logging("INFO")
    deliveries, fake = _deliveries([])
    batch = Batch(1, [Record(offset_=i, partition_=i % 2) for i in range(12)])
    for i in range(12):
        if i % 3 == 2:
            deliveries.dead_letter(batch, i, "decode", DecodeError("not JSON"))
        else:
            deliveries.dead_letter(batch, i, "validate", ValidationError(f"row {i} too short"))
    _drain(deliveries)
    assert len([t for t, *_ in fake.sent if t == "dlq"]) == 12  # every one is still sent
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert "WARNING" in lines[0]
    assert lines[0].endswith(
        "dead-lettering events[0]@0 (validate/ValidationError): row 0 too short"
    )
    assert lines[1].endswith("dead-lettering events[0]@2 (decode/DecodeError): not JSON")
    deliveries.dead_letter_log.flush()  # the worker's shutdown
    [summary] = capsys.readouterr().err.strip().splitlines()
    assert "WARNING" in summary
    assert summary.endswith(
        "dead-lettered 12 events in the last 1s: validate/ValidationError 8, "
        "decode/DecodeError 4 (stream-infer consume --topic dlq)"
    )
