"""Exactly once on the real broker: one output per input, whatever fails in between.

Every check reads the output and dead-letter topics with ``read_committed`` (as SPEC.md
section 4 says consumers must) and asserts that each input event has exactly one
record: its prediction, equal to what onnxruntime computes for it, or its dead letter.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from stream_infer.config import Settings
from stream_infer.ops.lag import group_lag
from stream_infer.tools.devbroker import start_broker, stop_broker
from tests.conftest import free_port
from tests.integration.conftest import (
    Feeder,
    events,
    read,
    running,
    send,
    topic_size,
    unique,
    wait_for,
    wait_for_log,
    worker_process,
)
from tests.integration.test_operate import process_config

pytestmark = pytest.mark.slow

EOS = {"guarantee": "exactly_once"}


def _features(i: int) -> list[float]:
    return [i % 7, 1.5, -2, i / 10]  # what tests.integration.conftest.events sends


def assert_exactly_once(
    kafka: str, settings: Settings, n: int, model: Path, dead: set[int] | None = None
) -> None:
    """Each of the ``n`` inputs has one committed output: a prediction or (for ``dead``) a DLQ."""
    dead = dead or set()
    wanted = n - len(dead)
    outputs = read(kafka, settings.topics.output, wanted, timeout=120)
    letters = read(kafka, settings.topics.dead_letter, len(dead), timeout=5 if not dead else 60)
    counts = Counter(r["value"]["id"] for r in outputs)
    twice = {i: c for i, c in counts.items() if c > 1}
    missing = set(range(n)) - dead - set(counts)
    assert not twice, f"{len(twice)} inputs predicted more than once, e.g. {list(twice)[:5]}"
    assert not missing, f"{len(missing)} inputs without a prediction, e.g. {sorted(missing)[:5]}"
    assert len(letters) == len(dead), [r["headers"].get("dlq.error.message") for r in letters]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids = sorted(counts)
    x = np.array([_features(i) for i in ids], dtype=np.float32)
    scores, best = session.run(None, {"x": x})
    by_id = {r["value"]["id"]: r["value"]["outputs"] for r in outputs}
    for j, i in enumerate(ids):
        np.testing.assert_allclose(by_id[i]["scores"], scores[j], rtol=1e-5, atol=1e-6)
        assert by_id[i]["best"] == int(best[j])


def test_two_workers_one_killed_twice_exactly_once(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(linear_model, partitions=6, processing=EOS)
    n = 15_000
    keys, values = events(n)
    feeder = Feeder(kafka, settings.topics.inputs[0], values, keys, rate=2000)
    cfg_a = process_config(settings, tmp_path / "a.yaml", free_port(), unique("a"))
    cfg_b = process_config(settings, tmp_path / "b.yaml", free_port(), unique("b"))
    with worker_process(cfg_b, tmp_path / "b.log") as b:
        wait_for_log(tmp_path / "b.log", "assigned")
        for crash in range(3):
            log_a = tmp_path / f"a{crash}.log"
            with worker_process(cfg_a, log_a) as a:
                wait_for_log(log_a, "assigned")
                if crash == 0:
                    feeder.start()
                if crash < 2:
                    before = topic_size(kafka, settings.topics.output)
                    wait_for(
                        lambda before=before: (
                            topic_size(kafka, settings.topics.output) >= before + 2000
                        ),
                        60,
                        "progress before the crash",
                    )
                    os.kill(a.pid, signal.SIGKILL)  # mid-transaction, most likely
                    a.wait(10)
                    continue
                feeder.join(120)
                assert feeder.error is None, feeder.error
                assert_exactly_once(kafka, settings, n, linear_model)
                a.send_signal(signal.SIGTERM)
                assert a.wait(35) == 0
        b.send_signal(signal.SIGTERM)
        assert b.wait(35) == 0
    lag = group_lag({"bootstrap.servers": kafka}, settings.kafka.group_id, settings.topics.inputs)
    assert sum(p.lag for p in lag) == 0, lag


def test_broker_crash_mid_stream_exactly_once(make_model, tmp_path: Path) -> None:
    from stream_infer.tools.topics import TopicDecl, apply_topics

    port, data = free_port(), tmp_path / "broker"
    bootstrap = start_broker(port, data).bootstrap
    try:
        names = {"inputs": ["in-eos"], "output": "out-eos", "dead_letter": "dlq-eos"}
        apply_topics(
            {"bootstrap.servers": bootstrap},
            [TopicDecl(name=t, partitions=3) for t in ("in-eos", "out-eos", "dlq-eos")],
        )
        model = make_model("linear")
        settings = Settings(
            kafka={
                "bootstrap_servers": bootstrap,
                "group_id": "g-eos-restart",
                "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            topics=names,
            model={"path": str(model)},
            batching={"max_batch_size": 64, "max_wait_ms": 5},
            processing=EOS,
            metrics={"port": 0},
        )  # type: ignore[arg-type]
        n = 6_000
        keys, values = events(n)
        feeder = Feeder(bootstrap, "in-eos", values, keys, rate=600)
        with running(settings) as worker:
            feeder.start()
            wait_for(lambda: worker.counts()[0] >= 1_500, 60, "predictions before the crash")
            stop_broker(data, kill=True)  # a crash: see test_faults for why not SIGTERM
            time.sleep(4)  # the outage itself: the broker stays down this long
            start_broker(port, data)
            feeder.join(180)
            assert feeder.error is None, feeder.error
            wait_for(
                lambda: sum(worker.counts()) >= n, 180, "every event after the restart", worker
            )
        assert_exactly_once(bootstrap, settings, n, model)
    finally:
        stop_broker(data)


def test_a_frozen_zombie_commits_no_duplicate(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    # Frozen past its session (6 s) and its transaction timeout (10 s): its partitions move
    # to B, which redoes the uncommitted work; when A thaws, everything it had in hand must
    # be refused (its transaction was aborted, its generation is stale).
    settings = make_settings(linear_model, partitions=4, processing=EOS)
    n = 8_000
    keys, values = events(n)
    feeder = Feeder(kafka, settings.topics.inputs[0], values, keys, rate=800)
    cfg_a = process_config(settings, tmp_path / "a.yaml", free_port(), unique("a"))
    cfg_b = process_config(settings, tmp_path / "b.yaml", free_port(), unique("b"))
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with worker_process(cfg_a, log_a) as a, worker_process(cfg_b, log_b) as b:
        wait_for_log(log_a, "assigned")
        wait_for_log(log_b, "assigned")
        feeder.start()
        wait_for(lambda: topic_size(kafka, settings.topics.output) >= 1_500, 60, "both working")
        os.kill(a.pid, signal.SIGSTOP)
        mark = log_b.stat().st_size
        try:
            # B is handed A's partitions once A's session has expired.
            wait_for_log(log_b, "assigned", timeout=60, after=mark)
            time.sleep(12)  # past A's transaction timeout (10 s), as a long GC pause would be
        finally:
            os.kill(a.pid, signal.SIGCONT)
        feeder.join(120)
        assert feeder.error is None, feeder.error
        assert_exactly_once(kafka, settings, n, linear_model)
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
            proc.wait(35)
    text = log_a.read_text()
    assert "aborting the transaction" in text or "fenced" in text or "lost" in text, text[-3000:]


def test_an_abortable_error_loses_nothing_and_doubles_nothing(
    kafka, make_settings, make_topic, linear_model: Path
) -> None:
    # The broker refuses one prediction for good (larger than the output topic takes):
    # inside a transaction that is an abortable error for the whole transaction. It is
    # aborted, the batches are consumed again, and the second time that one event is
    # dead-lettered (stage produce) while its neighbours are predicted once.
    output = make_topic("out-small", 2, config={"max.message.bytes": "10000"})
    settings = make_settings(
        linear_model,
        partitions=2,
        topics={"output": output},
        kafka={"producer": {"batch.size": 4000}},
        processing=EOS,
    )
    n = 400
    keys, values = events(n)
    big = 123
    # The id is echoed in the prediction: ~40 kB that compression cannot shrink.
    huge_id = base64.b64encode(os.urandom(30_000)).decode()
    values[big] = orjson.dumps({"id": huge_id, "features": _features(big)})
    send(kafka, settings.topics.inputs[0], values, keys)
    with running(settings) as worker:
        wait_for(lambda: sum(worker.counts()) >= n, 60, "every event", worker)
        aborts = worker._committer.aborts  # type: ignore[attr-defined]
    assert aborts >= 1
    outputs = read(kafka, settings.topics.output, n - 1)
    letters = read(kafka, settings.topics.dead_letter, 1)
    counts = Counter(r["value"]["id"] for r in outputs)
    assert set(counts) == set(range(n)) - {big} and max(counts.values()) == 1
    assert len(letters) == 1
    assert letters[0]["headers"]["dlq.error.stage"] == "produce"
    assert "MSG_SIZE_TOO_LARGE" in letters[0]["headers"]["dlq.error.message"]
    assert letters[0]["value"]["features"] == _features(big)  # the event, byte for byte


def test_a_worker_joining_mid_transaction_doubles_nothing(
    kafka, make_settings, linear_model: Path
) -> None:
    settings = make_settings(linear_model, partitions=6, processing=EOS)
    n = 6_000
    keys, values = events(n)
    feeder = Feeder(kafka, settings.topics.inputs[0], values, keys, rate=1000)
    # Two workers in one process: give each its own id (in production each process has
    # one), or they would share a transactional id and fence each other.
    first_settings, second_settings = (
        settings.model_copy(
            update={"processing": settings.processing.model_copy(update={"worker_id": name})}
        )
        for name in (unique("first"), unique("second"))
    )
    with running(first_settings) as first:
        feeder.start()
        wait_for(lambda: first.counts()[0] >= 1_000, 60, "first worker predicting", first)
        with running(second_settings) as second:
            wait_for(lambda: second.counts()[0] >= 500, 60, "second worker predicting", second)
            feeder.join(60)
            assert feeder.error is None
            wait_for(lambda: first.counts()[0] + second.counts()[0] >= n, 60, "all predictions")
        assert first.stats.revoked > 0
    assert_exactly_once(kafka, settings, n, linear_model)


def test_poison_and_inference_failures_are_dead_lettered_inside_the_transaction(
    kafka, make_settings, gather_model: Path
) -> None:
    settings = make_settings(gather_model, partitions=1, processing=EOS)
    values: list[Any] = []
    bad = set()
    for i in range(300):
        if i % 50 == 7:
            values.append(b"not json")
            bad.add(i)
        elif i % 50 == 11:
            values.append(orjson.dumps({"id": i, "features": [99]}))  # out of range in Gather
            bad.add(i)
        else:
            values.append(orjson.dumps({"id": i, "features": [i % 10]}))
    send(kafka, settings.topics.inputs[0], values)
    with running(settings) as worker:
        wait_for(lambda: sum(worker.counts()) >= 300, 60, "every event", worker)
    outputs = read(kafka, settings.topics.output, 300 - len(bad))
    letters = read(kafka, settings.topics.dead_letter, len(bad))
    assert Counter(r["value"]["id"] for r in outputs) == Counter(set(range(300)) - bad)
    stages = Counter(r["headers"]["dlq.error.stage"] for r in letters)
    assert stages == {"decode": 6, "inference": 6}
