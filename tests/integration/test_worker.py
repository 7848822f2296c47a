"""The worker against the real broker: predictions, keys, sources, commits, several inputs.

Every test runs with both runtimes (native and Faust): the contract is the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from confluent_kafka import Consumer, TopicPartition

from stream_infer.ops.lag import group_lag
from tests.integration.conftest import events, read, running, send


def test_every_event_gets_one_prediction_equal_to_onnxruntime(
    kafka, make_settings, demo_model: Path, runtime: str
) -> None:
    from stream_infer.tools.demo import demo_dataset

    x, _, _ = demo_dataset()
    settings = make_settings(demo_model, partitions=3)
    topic = settings.topics.inputs[0]
    n = len(x)
    keys = [f"row-{i}".encode() for i in range(n)]
    values = [
        orjson.dumps({"id": i, "features": x[i].tolist(), "extra": "ignored"}) for i in range(n)
    ]
    send(kafka, topic, values, keys)

    with running(settings, runtime=runtime):
        got = read(kafka, settings.topics.output, n)
    assert len(got) == n

    # Input side, to check source, key and timestamp of every prediction.
    inputs = {(r["partition"], r["offset"]): r for r in read(kafka, topic, n)}
    alone = ort.InferenceSession(str(demo_model), providers=["CPUExecutionProvider"])
    seen = set()
    for rec in got:
        doc = rec["value"]
        src = doc["source"]
        assert src["topic"] == topic
        original = inputs[(src["partition"], src["offset"])]
        i = original["value"]["id"]
        assert doc["id"] == i and rec["key"] == f"row-{i}"
        assert doc["event_time_ms"] == original["timestamp"]
        assert (doc["model"], doc["model_version"]) == ("demo", "1")
        label, proba = alone.run(None, {"X": x[i : i + 1].astype(np.float32)})
        assert doc["outputs"]["label"] == int(label[0])
        np.testing.assert_allclose(doc["outputs"]["probabilities"], proba[0], rtol=1e-5, atol=1e-6)
        seen.add(i)
    assert seen == set(range(n))  # one prediction per event, none twice

    dead = read(kafka, settings.topics.dead_letter, 0, timeout=2)
    assert dead == []
    lag = group_lag({"bootstrap.servers": kafka}, settings.kafka.group_id, settings.topics.inputs)
    assert sum(p.lag for p in lag) == 0, lag


def test_several_input_topics_one_group(
    kafka, make_settings, make_topic, linear_model: Path, runtime: str
) -> None:
    first, second = make_topic("in-a", 2), make_topic("in-b", 1)
    settings = make_settings(linear_model, inputs=[first, second])
    keys, values = events(50)
    send(kafka, first, values[:30], keys[:30])
    send(kafka, second, values[30:], keys[30:])
    with running(settings, runtime=runtime):
        got = read(kafka, settings.topics.output, 50)
    by_topic = {}
    for rec in got:
        by_topic.setdefault(rec["value"]["source"]["topic"], set()).add(rec["value"]["id"])
    assert by_topic == {first: set(range(30)), second: set(range(30, 50))}


def test_compressed_inputs_are_read(kafka, make_settings, linear_model: Path, runtime: str) -> None:
    # The native producer writes lz4 by default: every runtime must read what it writes.
    settings = make_settings(linear_model, partitions=1)
    codecs = ("gzip", "snappy", "lz4", "zstd")
    for n, codec in enumerate(codecs):
        keys, values = events(50, start=50 * n)
        send(kafka, settings.topics.inputs[0], values, keys, compression=codec)
    with running(settings, runtime=runtime):
        got = read(kafka, settings.topics.output, 50 * len(codecs))
    assert sorted(r["value"]["id"] for r in got) == list(range(50 * len(codecs)))


def test_keys_and_nulls_survive(kafka, make_settings, linear_model: Path, runtime: str) -> None:
    settings = make_settings(linear_model, partitions=1)
    values = [
        orjson.dumps({"features": [1, 2, 3, 4]}),
        orjson.dumps({"id": "x", "features": [0, 0, 0, 0]}),
    ]
    send(kafka, settings.topics.inputs[0], values, keys=[None, b"\x00\xffbinary"])
    with running(settings, runtime=runtime):
        got = read(kafka, settings.topics.output, 2)
    by_offset = {r["value"]["source"]["offset"]: r for r in got}
    assert by_offset[0]["key"] is None and by_offset[0]["value"]["id"] is None
    assert by_offset[1]["key"] == {"base64": "AP9iaW5hcnk="} and by_offset[1]["value"]["id"] == "x"


def test_offsets_are_committed_while_running(
    kafka, make_settings, linear_model: Path, runtime: str
) -> None:
    settings = make_settings(linear_model, partitions=2)
    keys, values = events(200)
    send(kafka, settings.topics.inputs[0], values, keys)
    with running(settings, runtime=runtime):
        read(kafka, settings.topics.output, 200)
        probe = Consumer({"bootstrap.servers": kafka, "group.id": settings.kafka.group_id})
        try:
            parts = [TopicPartition(settings.topics.inputs[0], p) for p in range(2)]
            for _ in range(100):
                committed = probe.committed(parts, timeout=10)
                if sum(max(0, tp.offset) for tp in committed) == 200:
                    break
                probe.poll(0.1)  # wait for the next periodic commit, not a fixed sleep
            assert sum(max(0, tp.offset) for tp in committed) == 200
        finally:
            probe.close()
