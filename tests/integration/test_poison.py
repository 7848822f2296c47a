"""Poison events on the real broker: each one dead-lettered alone, byte for byte, with reasons.

Every test runs with both runtimes (native and Faust): the contract is the same.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from stream_infer.errors import ProduceError
from stream_infer.ops.lag import group_lag
from tests.integration.conftest import make_worker, read, running, send

GOOD = [1.0, 2.0, 3.0, 4.0]

# (value, stage, words in dlq.error.message)
POISON: list[tuple[bytes | None, str, str]] = [
    (None, "decode", "tombstone"),
    (b"", "decode", "not valid JSON"),
    (b"\xff\xfe\xfd", "decode", "not valid JSON"),
    (b'{"features": [1, 2, 3', "decode", "not valid JSON"),
    (b"[1, 2, 3, 4]", "validate", "must be a JSON object"),
    (b'{"id": 1}', "validate", "'features' is missing"),
    (b'{"features": null}', "validate", "'features' is null"),
    (b'{"features": [1, 2, 3]}', "validate", "has 3 values; input x takes 4"),
    (b'{"features": [1, "2", 3, 4]}', "validate", "features[1] is string"),
    (b'{"features": [1, null, 3, 4]}', "validate", "features[1] is null"),
    (b'{"features": [1, true, 3, 4]}', "validate", "features[1] is boolean"),
    (b'{"features": [1, [2], 3, 4]}', "validate", "nested too deeply"),
    (b'{"features": [1e39, 2, 3, 4]}', "validate", "out of range for float32"),
    (b'{"features": {"wrong": [1, 2, 3, 4]}}', "validate", "missing input 'x'"),
    (
        b'{"id": {"a": 1}, "features": [1, 2, 3, 4]}',
        "validate",
        "id must be a string or an integer",
    ),
]


def _capture(fn: Callable[[], None], into: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        into.append(exc)


def _headers(rec: dict) -> dict:
    return rec["headers"]


def test_every_poison_kind_is_dead_lettered_and_neighbours_predicted(
    kafka, make_settings, linear_model: Path, runtime: str
) -> None:
    settings = make_settings(
        linear_model, partitions=1, batching={"max_batch_size": 500, "max_wait_ms": 50}
    )
    topic = settings.topics.inputs[0]
    values: list[bytes | None] = []
    keys: list[bytes | None] = []
    hdrs: list[list[tuple[str, bytes]]] = []
    expected_dead = {}
    for n, (poison, stage, words) in enumerate(POISON):
        values.append(orjson.dumps({"id": f"good-{n}", "features": GOOD}))
        keys.append(f"g{n}".encode())
        hdrs.append([])
        expected_dead[len(values)] = (poison, stage, words, f"p{n}".encode())
        values.append(poison)
        keys.append(f"p{n}".encode())
        hdrs.append([("trace-id", f"t{n}".encode()), ("dlq.error.stage", b"stale")])
    values.append(orjson.dumps({"id": "good-last", "features": GOOD}))
    keys.append(b"glast")
    hdrs.append([])
    before = int(time.time() * 1000)
    send(kafka, topic, values, keys, headers=hdrs, partition=0)

    with running(settings, runtime=runtime):
        predictions = read(kafka, settings.topics.output, len(POISON) + 1)
        dead = read(kafka, settings.topics.dead_letter, len(POISON))
    after = int(time.time() * 1000)

    assert sorted(r["value"]["id"] for r in predictions) == sorted(
        [f"good-{n}" for n in range(len(POISON))] + ["good-last"]
    )
    assert len(dead) == len(POISON)
    from confluent_kafka import Consumer, TopicPartition

    # Raw read of the dead letters: key, value and headers must be the original bytes.
    raw = Consumer({"bootstrap.servers": kafka, "group.id": "raw-" + settings.kafka.group_id})
    raw.assign([TopicPartition(settings.topics.dead_letter, 0, 0)])
    msgs = []
    while len(msgs) < len(POISON):
        msgs.extend(m for m in raw.consume(len(POISON) - len(msgs), 5) if m.error() is None)
    raw.close()
    assert len(msgs) == len(POISON)
    for msg in msgs:
        h = {}
        names = []
        for k, v in msg.headers() or []:
            names.append(k)
            h[k] = v
        offset = int(h["dlq.original.offset"])
        poison, stage, words, key = expected_dead[offset]
        assert msg.value() == poison
        assert msg.key() == key
        n = key.decode()[1:]
        assert h["trace-id"] == f"t{n}".encode()
        assert names.count("dlq.error.stage") == 1
        assert h["dlq.error.stage"].decode() == stage
        assert (
            h["dlq.error.class"].decode()
            == {"decode": "DecodeError", "validate": "ValidationError"}[stage]
        )
        assert words in h["dlq.error.message"].decode()
        assert h["dlq.original.topic"].decode() == topic
        assert h["dlq.original.partition"] == b"0"
        assert before - 60_000 <= int(h["dlq.original.timestamp"]) <= after
        assert h["dlq.consumer.group"].decode() == settings.kafka.group_id
        assert h["dlq.model.version"] == b"1"
        assert h["dlq.worker"].decode() == settings.processing.worker_id
        assert before <= int(h["dlq.failed.at"]) <= after


def test_inference_failures_dead_letter_only_the_bad_rows(
    kafka, make_settings, gather_model: Path, runtime: str
) -> None:
    settings = make_settings(
        gather_model, partitions=1, batching={"max_batch_size": 200, "max_wait_ms": 50}
    )
    idx = [i % 10 for i in range(100)]
    bad = {13: 77, 50: -11, 51: 10}
    for pos, value in bad.items():
        idx[pos] = value
    send(
        kafka,
        settings.topics.inputs[0],
        [orjson.dumps({"id": i, "features": [v]}) for i, v in enumerate(idx)],
    )
    with running(settings, runtime=runtime):
        predictions = read(kafka, settings.topics.output, 100 - len(bad))
        dead = read(kafka, settings.topics.dead_letter, len(bad))
    assert sorted(r["value"]["id"] for r in predictions) == [i for i in range(100) if i not in bad]
    for rec in predictions:
        assert rec["value"]["outputs"]["value"] == [idx[rec["value"]["id"]] * 10.0]
    assert sorted(int(r["headers"]["dlq.original.offset"]) for r in dead) == sorted(bad)
    for rec in dead:
        h = _headers(rec)
        assert h["dlq.error.stage"] == "inference"
        assert h["dlq.error.class"] == "InvalidArgument"
        assert "out of data bounds" in h["dlq.error.message"]


def test_a_prediction_the_broker_refuses_is_dead_lettered_at_produce(
    kafka, make_settings, make_topic, linear_model: Path, runtime: str
) -> None:
    output = make_topic("small-out", 1, config={"max.message.bytes": 10_000})
    settings = make_settings(
        linear_model,
        partitions=1,
        topics={"output": output},
        kafka={"producer": {"batch.size": 4000}},
    )
    huge_id = base64.b64encode(os.urandom(30_000)).decode()  # incompressible: ~40 kB prediction
    values = [orjson.dumps({"id": i, "features": GOOD}) for i in range(20)]
    values[7] = orjson.dumps({"id": huge_id, "features": GOOD})
    send(kafka, settings.topics.inputs[0], values)
    with running(settings, runtime=runtime):
        predictions = read(kafka, output, 19)
        dead = read(kafka, settings.topics.dead_letter, 1)
    assert sorted(r["value"]["id"] for r in predictions) == [i for i in range(20) if i != 7]
    assert len(dead) == 1
    h = _headers(dead[0])
    assert h["dlq.error.stage"] == "produce"
    assert h["dlq.original.offset"] == "7"
    assert "MSG_SIZE_TOO_LARGE" in h["dlq.error.message"]
    assert dead[0]["value"]["id"] == huge_id


def test_a_dead_letter_too_large_for_its_topic_becomes_a_stub(
    kafka, make_settings, make_topic, linear_model: Path, runtime: str
) -> None:
    dlq = make_topic("tiny-dlq", 1, config={"max.message.bytes": 4_000})
    settings = make_settings(linear_model, partitions=1, topics={"dead_letter": dlq})
    topic = settings.topics.inputs[0]
    good = [orjson.dumps({"id": i, "features": GOOD}) for i in range(10)]
    poison = b"not json " + base64.b64encode(os.urandom(6_000))  # too large for the DLQ topic
    send(kafka, topic, [*good, poison, *good], keys=[b"k"] * 21)
    with running(settings, runtime=runtime):
        predictions = read(kafka, settings.topics.output, 20)
        dead = read(kafka, dlq, 1)
    assert len(predictions) == 20  # the partition moved on past the poison
    [stub] = dead
    h = stub["headers"]
    assert h["dlq.value.truncated"] == "true"
    assert h["dlq.value.size"] == str(len(poison))
    assert h["dlq.original.offset"] == "10" and h["dlq.error.stage"] == "produce"
    assert "MSG_SIZE_TOO_LARGE" in h["dlq.error.message"]
    assert stub["value"] == poison[:1024].decode()
    lag = group_lag({"bootstrap.servers": kafka}, settings.kafka.group_id, [topic])
    assert lag[0].lag == 0


def test_an_undeliverable_dead_letter_stops_the_worker_and_commits_nothing_past_it(
    kafka, make_settings, make_topic, linear_model: Path, runtime: str
) -> None:
    # A compacted dead-letter topic refuses records without a key: no stub can help.
    dlq = make_topic("compact-dlq", 1, config={"cleanup.policy": "compact"})
    settings = make_settings(linear_model, partitions=1, topics={"dead_letter": dlq})
    topic = settings.topics.inputs[0]
    good = [orjson.dumps({"id": i, "features": GOOD}) for i in range(10)]
    send(kafka, topic, [*good, b"not json", *good])  # no keys
    worker = make_worker(settings, runtime)
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(worker.run, outcome), daemon=True)
    thread.start()
    thread.join(90)  # the worker must stop by itself
    assert not thread.is_alive(), "the worker kept running past an undeliverable dead letter"
    assert len(outcome) == 1 and isinstance(outcome[0], ProduceError), outcome
    assert "dead letter for" in str(outcome[0]) and "cannot be delivered" in str(outcome[0])
    lag = group_lag({"bootstrap.servers": kafka}, settings.kafka.group_id, [topic])
    assert lag[0].committed is None or lag[0].committed <= 10
