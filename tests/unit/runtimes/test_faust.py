"""The Faust runtime without a broker: settings translation, records, error codes, the pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import orjson
import pytest
from aiokafka import errors as aioerrors
from faust.exceptions import ProducerSendError
from faust.types.tuples import Message

from stream_infer.config import Settings
from stream_infer.errors import ConfigError
from stream_infer.kafka.producer import verdict
from stream_infer.runtimes.faust.options import app_settings, broker_urls
from stream_infer.runtimes.faust.outbox import kafka_error
from stream_infer.runtimes.faust.pipeline import DeadLetter, FaustRecord, Pipeline, Prediction


def _settings(**sections: object) -> Settings:
    return Settings(**sections)  # type: ignore[arg-type]


def _message(offset: int, value: bytes | None, **kw: object) -> Message:
    fields: dict[str, object] = {
        "topic": "events", "partition": 2, "offset": offset, "timestamp": 1764000000.123,
        "timestamp_type": 0, "headers": [("trace", b"t1")], "key": b"k", "value": value,
        "checksum": None,
    }  # fmt: skip
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def test_the_app_is_the_group_on_the_configured_brokers(tmp_path: Path) -> None:
    s = _settings(
        kafka={
            "bootstrap_servers": "a:9092, b:9093",
            "group_id": "g1",
            "consumer": {"session.timeout.ms": 6000, "auto.offset.reset": "smallest"},
            "producer": {"linger.ms": 20, "acks": "all", "batch.size": 4000},
        },
        processing={"commit_interval_ms": 250, "worker_id": "w-1"},
        faust={"topic_partitions": 3, "stream_buffer_maxsize": 100},
    )
    opts = app_settings(s, tmp_path)
    assert opts["id"] == "g1"
    assert opts["broker"] == broker_urls("a:9092, b:9093") == ["kafka://a:9092", "kafka://b:9093"]
    assert opts["broker_session_timeout"] == 6.0
    assert opts["consumer_auto_offset_reset"] == "earliest"
    assert (opts["producer_linger"], opts["producer_acks"]) == (0.02, -1)
    assert opts["producer_max_batch_size"] == 4000
    assert opts["broker_commit_interval"] == 0.25
    assert opts["consumer_group_instance_id"] == "w-1"  # set on purpose: static membership
    assert (opts["topic_partitions"], opts["stream_buffer_maxsize"]) == (3, 100)
    assert opts["web_enabled"] is False and opts["topic_disable_leader"] is True
    assert opts["isolation_level"] == "read_committed"
    assert opts["datadir"] == str(tmp_path)
    assert opts["broker_credentials"] is None


def test_a_default_worker_id_is_no_static_membership(tmp_path: Path) -> None:
    assert app_settings(_settings(), tmp_path)["consumer_group_instance_id"] is None


def test_sasl_and_ssl_properties_become_faust_credentials(tmp_path: Path) -> None:
    s = _settings(
        kafka={
            "common": {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "u",
                "sasl.password": "p",
            }
        }
    )
    creds = app_settings(s, tmp_path)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("u", "p", "SCRAM-SHA-512")
    ssl_only = _settings(kafka={"common": {"security.protocol": "SSL"}})
    assert isinstance(app_settings(ssl_only, tmp_path)["broker_credentials"], faust.SSLCredentials)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"kafka": {"consumer": {"fetch.wait.max.ms": 5}}},
            "kafka.consumer.fetch.wait.max.ms: not supported by the Faust runtime",
        ),
        (
            {"kafka": {"producer": {"acks": "some"}}},
            "kafka.producer.acks: takes all, -1, 0 or 1 (got 'some')",
        ),
        (
            {"kafka": {"consumer": {"group.protocol": "consumer"}}},
            "kafka.consumer.group.protocol: aiokafka speaks the classic group protocol only",
        ),
        (
            {"kafka": {"common": {"sasl.kerberos.service.name": "kafka"}}},
            "kafka.common.sasl.kerberos.service.name: not supported by the Faust runtime",
        ),
        (
            {"kafka": {"common": {"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}}},
            "kafka.common.sasl.mechanism: 'GSSAPI' is not supported by the Faust runtime",
        ),
        (
            {"processing": {"guarantee": "exactly_once"}},
            "processing.guarantee: exactly_once is not available with --runtime faust",
        ),
        (
            {"faust": {"web_port": 9000}, "metrics": {"port": 9000}},
            "faust.web_port: 9000 is metrics.port too",
        ),
    ],
)
def test_what_faust_cannot_take_is_a_one_line_error_naming_the_key(
    sections: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        app_settings(_settings(**sections), tmp_path)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_faust_message_reads_like_a_confluent_record() -> None:
    # 1764000000.123 s is not exact in binary; rounding gives back Kafka's milliseconds.
    rec = FaustRecord(_message(7, b"{}"))
    assert (rec.topic(), rec.partition(), rec.offset()) == ("events", 2, 7)
    assert rec.timestamp() == (1, 1764000000123)
    assert (rec.key(), rec.value(), rec.headers()) == (b"k", b"{}", [("trace", b"t1")])
    log_append = FaustRecord(_message(1, None, timestamp_type=1, headers={"a": b"1"}))
    assert log_append.timestamp()[0] == 2 and log_append.headers() == [("a", b"1")]
    assert FaustRecord(_message(1, None, headers=None)).headers() is None


def test_aiokafka_errors_get_the_native_fates_and_names() -> None:
    too_large = kafka_error(aioerrors.MessageSizeTooLargeError())
    assert too_large is not None and verdict(too_large) == "reject"
    assert too_large.name() == "MSG_SIZE_TOO_LARGE"
    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = aioerrors.MessageSizeTooLargeError()
    assert kafka_error(wrapped).code() == too_large.code()  # type: ignore[union-attr]
    timeout = kafka_error(aioerrors.KafkaTimeoutError())
    assert timeout is not None and verdict(timeout, 50) == "retry"
    leader = kafka_error(aioerrors.NotLeaderForPartitionError())
    assert leader is not None and verdict(leader, 50) == "retry"
    auth = kafka_error(aioerrors.TopicAuthorizationFailedError())
    assert auth is not None and verdict(auth) == "fatal"
    nameless = kafka_error(aioerrors.UnknownError())  # e.g. 87 INVALID_RECORD, code dropped
    assert nameless is not None and verdict(nameless, 0) == "retry"
    assert verdict(nameless, 8) == "reject"
    assert kafka_error(ValueError("a bug")) is None


def test_the_pipeline_answers_every_event_in_order(linear_model: Path) -> None:
    pipeline = Pipeline(_settings(model={"path": str(linear_model)}))
    try:
        events = [
            _message(0, orjson.dumps({"id": "a", "features": [1, 2, 3, 4]})),
            _message(1, b"not json"),
            _message(2, orjson.dumps({"features": [1, 2]})),
            _message(3, orjson.dumps({"id": 4, "features": [0, 0, 0, 1]})),
        ]
        results = asyncio.run(pipeline.process(events))
    finally:
        pipeline.close()
    assert [type(r) for r in results] == [Prediction, DeadLetter, DeadLetter, Prediction]
    first = results[0]
    assert isinstance(first, Prediction) and first.key == b"k"
    doc = orjson.loads(first.value)
    assert doc["id"] == "a" and doc["source"] == {"topic": "events", "partition": 2, "offset": 0}
    assert doc["event_time_ms"] == 1764000000123
    bad = results[1]
    assert isinstance(bad, DeadLetter) and bad.stage == "decode" and bad.value == b"not json"
    headers = dict(bad.headers)
    assert headers["trace"] == b"t1" and headers["dlq.original.offset"] == b"1"
    assert headers["dlq.error.stage"] == b"decode"
    assert isinstance(results[2], DeadLetter) and results[2].stage == "validate"
