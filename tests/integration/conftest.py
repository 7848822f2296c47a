"""A real Kafka broker for the session, and factories for topics, settings, workers and records.

The broker is the one ``scripts/test`` started (``KAFKA_TEST_BOOTSTRAP``)
or, when pytest runs on its own, one this fixture starts with the same
launcher as ``stream-infer broker start``. A broker that cannot start fails
the run: integration tests never skip for want of Kafka.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from stream_infer.config import Settings
from stream_infer.logging import configure_logging
from stream_infer.runtimes.worker import Worker
from stream_infer.tools.devbroker import start_broker, stop_broker
from stream_infer.tools.tail import decode_record, tail
from stream_infer.tools.topics import TopicDecl, apply_topics
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    data = tmp_path_factory.mktemp("broker")
    status = start_broker(free_port(), data)
    try:
        yield status.bootstrap
    finally:
        stop_broker(data)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_topic(kafka: str) -> Callable[..., str]:
    def make(prefix: str = "t", partitions: int = 3, config: dict[str, Any] | None = None) -> str:
        name = unique(prefix)
        apply_topics(
            {"bootstrap.servers": kafka},
            [TopicDecl(name=name, partitions=partitions, config=config or {})],
        )
        return name

    return make


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


@pytest.fixture
def make_settings(kafka: str, make_topic: Callable[..., str]) -> Callable[..., Settings]:
    """Settings with fresh topics and group; keyword sections are merged over the defaults."""

    def make(
        model: Path, partitions: int = 3, inputs: list[str] | None = None, **sections: Any
    ) -> Settings:
        data: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": kafka,
                "group_id": unique("group"),
                # Faster failure detection than production defaults, so tests stay short.
                "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            "topics": {
                "inputs": inputs or [make_topic("in", partitions)],
                "output": make_topic("out", partitions),
                "dead_letter": make_topic("dlq", 1),
            },
            "model": {"path": str(model)},
            "batching": {"max_batch_size": 64, "max_wait_ms": 5},
            "processing": {"commit_interval_ms": 200, "shutdown_timeout_s": 20},
            # Any free port: several workers share this process or this machine.
            "metrics": {"port": 0, "lag_interval_s": 0.5},
        }
        return Settings(**_merge(data, sections))

    return make


RUNTIMES = ("native", "faust")


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    """Each runtime in turn, for the tests both must pass (``running(..., runtime)``)."""
    return str(request.param)


def make_worker(settings: Settings, runtime: str = "native") -> Any:
    """A ``Worker`` or a ``FaustWorker``: the same run/stop/ready/counts/telemetry."""
    if runtime == "faust":
        from stream_infer.runtimes.faust import FaustWorker

        return FaustWorker(settings)
    return Worker(settings)


@contextmanager
def running(settings: Settings, timeout: float = 60.0, runtime: str = "native") -> Iterator[Any]:
    """A worker (either runtime) on a thread of this process; stopped (gracefully) on exit.

    Its log goes to stderr, which pytest shows for a failing test, and still propagates to
    the root logger so that ``caplog`` sees it.
    """
    configure_logging("INFO")
    logging.getLogger("stream_infer").propagate = True
    worker = make_worker(settings, runtime)
    errors: list[BaseException] = []
    worker.test_errors = errors  # type: ignore[attr-defined]  # read by wait_for

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not worker.ready.wait(0.1):
        if errors:
            raise errors[0]
        assert time.monotonic() < deadline, "worker did not join its group in time"
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop within 60s"
    if errors:
        raise errors[0]


def send(
    kafka: str,
    topic: str,
    values: list[bytes | None],
    keys: list[bytes | None] | None = None,
    headers: list[Any] | None = None,
    partition: int | None = None,
    compression: str = "none",
) -> None:
    producer = Producer(
        {"bootstrap.servers": kafka, "linger.ms": 5, "compression.type": compression}
    )
    failures: list[Any] = []
    for i, value in enumerate(values):
        kwargs: dict[str, Any] = {
            "on_delivery": lambda err, _m: failures.append(err) if err else None
        }
        if partition is not None:
            kwargs["partition"] = partition
        if headers is not None:
            kwargs["headers"] = headers[i]
        producer.produce(topic, value, keys[i] if keys else None, **kwargs)
    assert producer.flush(30) == 0 and not failures, failures


def events(n: int, width: int = 4, start: int = 0) -> tuple[list[bytes], list[bytes]]:
    """``n`` valid events for a ``width``-feature model: keys and values."""
    keys = [f"k{i}".encode() for i in range(start, start + n)]
    values = [
        orjson.dumps({"id": i, "features": [i % 7, 1.5, -2, i / 10][:width]})
        for i in range(start, start + n)
    ]
    return keys, values


def read(kafka: str, topic: str, expected: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every record of ``topic`` once ``expected`` are in (or what is in after ``timeout``)."""
    deadline = time.monotonic() + timeout
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = [
            decode_record(m) for m in tail({"bootstrap.servers": kafka}, topic, idle_timeout=1.0)
        ]
        if len(records) >= expected:
            return records
    return records


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, worker: Worker | None = None
) -> None:
    """Poll ``predicate``; with ``worker`` given, fail at once if that worker died."""
    deadline = time.monotonic() + timeout
    while not predicate():
        errors = getattr(worker, "test_errors", None)
        if errors:
            raise AssertionError(f"the worker died while waiting for {what}") from errors[0]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def write_config(settings: Settings, path: Path) -> Path:
    """The settings as a YAML file; each process then names itself (worker_id)."""
    data = settings.model_dump(mode="json", by_alias=True)
    data["processing"].pop("worker_id", None)
    path.write_text(yaml.safe_dump(data))
    return path


def process_config(settings: Settings, path: Path, port: int, worker_id: str | None) -> Path:
    """A worker's own YAML: its metrics port, and a stable id when one is given."""
    data = settings.model_dump(mode="json", by_alias=True)
    data["processing"].pop("worker_id", None)
    if worker_id is not None:
        data["processing"]["worker_id"] = worker_id
    data["metrics"]["port"] = port
    path.write_text(yaml.safe_dump(data))
    return path


def topic_size(kafka: str, topic: str) -> int:
    """Records in ``topic`` (sum over partitions), from the watermarks alone."""
    client = Consumer({"bootstrap.servers": kafka, "group.id": unique("size")})
    try:
        meta = client.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        client.close()


class Feeder(threading.Thread):
    """Produces ``values`` at ``rate`` per second in the background, surviving broker outages."""

    def __init__(
        self, kafka: str, topic: str, values: list[bytes], keys: list[bytes], rate: float
    ) -> None:
        super().__init__(name="feeder", daemon=True)
        self.args = (kafka, topic, values, keys, rate)
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        kafka, topic, values, keys, rate = self.args
        producer = Producer(
            {"bootstrap.servers": kafka, "linger.ms": 5, "enable.idempotence": True}
        )
        failures: list[Any] = []
        start = time.monotonic()
        try:
            for i, value in enumerate(values):
                producer.produce(
                    topic,
                    value,
                    keys[i],
                    on_delivery=lambda e, _m: failures.append(e) if e else None,
                )
                producer.poll(0)
                self.sent = i + 1
                ahead = (i + 1) / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the load, not waiting for an event
            assert producer.flush(120) == 0, "feeder could not deliver everything"
            assert not failures, failures[:3]
        except BaseException as exc:
            self.error = exc


@contextmanager
def worker_process(
    config: Path, log: Path, runtime: str = "native", *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``stream-infer run`` as its own process (for kill -9 and signals), logging to ``log``."""
    with open(log, "ab") as out:
        command = [sys.executable, "-m", "stream_infer", "run", "--runtime", runtime, *options]
        proc = subprocess.Popen(
            [*command, "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_for_log(log: Path, text: str, timeout: float = 60.0, after: int = 0) -> int:
    """Wait until ``text`` appears in ``log`` past byte ``after``; returns where it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = log.read_bytes() if log.exists() else b""
        pos = data.find(text.encode(), after)
        if pos >= 0:
            return pos + len(text)
        time.sleep(0.05)
    raise AssertionError(f"'{text}' not in {log} after {timeout}s:\n{log.read_text()[-3000:]}")
