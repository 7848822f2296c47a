"""Hostile events against the real worker: the largest Kafka allows, a million features.

Each becomes a dead letter within the normal batch time, and the worker's memory
stays bounded (its peak resident set is read from /proc before and after).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from stream_infer.config import Settings
from tests import models
from tests.integration.conftest import (
    events,
    read,
    topic_size,
    wait_for_log,
    worker_process,
    write_config,
)

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def _peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident set, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _send_large(kafka: str, topic: str, values: list[bytes], keys: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": kafka, "message.max.bytes": 8 * MIB})
    failures: list[object] = []
    for key, value in zip(keys, values, strict=True):
        producer.produce(
            topic, value, key, on_delivery=lambda e, _m: failures.append(e) if e else None
        )
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_the_largest_events_are_dead_lettered_quickly_in_bounded_memory(
    kafka: str,
    make_settings: Callable[..., Settings],
    make_topic: Callable[..., str],
    model_dir: Path,
    tmp_path: Path,
) -> None:
    model = models.linear(model_dir / "twelve.onnx", n_features=12)
    big = {"max.message.bytes": str(8 * MIB)}
    settings = make_settings(
        model,
        inputs=[make_topic("in", 1, big)],
        topics={"dead_letter": make_topic("dlq", 1, big)},
        batching={"max_batch_size": 512, "max_wait_ms": 10},
    )
    topic = settings.topics.inputs[0]
    log = tmp_path / "worker.log"
    # 1 MiB (Kafka's default max.message.bytes) and a million one-digit numbers (2 MB).
    one_mib = b'{"features": [' + b"1.25," * (MIB // 5 - 4) + b"1]}"
    million = b'{"id": 7, "features": [' + b",".join([b"1"] * 1_000_000) + b"]}"
    hostile = [one_mib] * 10 + [million] * 10
    keys, good = events(20, width=12)
    good = [v.replace(b"]}", b", 0, 0, 0, 0, 0, 0, 0, 0]}") for v in good]  # 12 features
    with worker_process(write_config(settings, tmp_path / "w.yaml"), log) as proc:
        wait_for_log(log, "assigned ")
        before = _peak_rss(proc.pid)
        started = time.monotonic()
        _send_large(kafka, topic, [*hostile, *good], [b"h"] * len(hostile) + keys)
        deadline = started + 60
        while topic_size(kafka, settings.topics.dead_letter) < len(hostile):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        took = time.monotonic() - started
        grown = _peak_rss(proc.pid) - before
    assert took < 10, f"{took:.1f}s for {len(hostile)} hostile events"  # unguarded: 6 s
    # The records themselves (30 MB) pass through librdkafka and Python once or twice:
    # +54 MiB measured; +543 MiB without the guard (2 cores, demo-sized worker).
    assert grown < 200 * MIB, f"peak resident set grew by {grown / MIB:.0f} MiB"
    dead = read(kafka, settings.topics.dead_letter, len(hostile))
    reasons = {d["headers"]["dlq.error.message"] for d in dead}
    assert all("refused unparsed" in r for r in reasons), reasons
    assert len(read(kafka, settings.topics.output, 20)) == 20  # the good ones, predicted
