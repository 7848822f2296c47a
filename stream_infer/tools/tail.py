"""Reading a topic for people: every partition from the start or the end, decoded as JSON lines."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from stream_infer.errors import KafkaClientError

__all__ = ["decode_record", "tail"]


def _text(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def decode_record(msg: Any) -> dict[str, Any]:
    """A record as a JSON-able dict: the value parsed when it is JSON, else as text."""
    raw = msg.value()
    try:
        value: Any = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        value = _text(raw)
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": msg.timestamp()[1],
        "key": _text(msg.key()),
        "headers": {k: _text(v) for k, v in (msg.headers() or [])},
        "value": value,
    }


def tail(
    base_conf: dict[str, Any],
    topic: str,
    from_beginning: bool = True,
    idle_timeout: float | None = 5.0,
    count: int | None = None,
    read_committed: bool = True,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Any]:
    """Yield records of every partition; ends after ``count`` or ``idle_timeout`` without news.

    Partitions are assigned directly (no group, nothing committed), so tailing
    never disturbs the workers' consumer group.
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    from stream_infer.logging import get_logger

    conf = {
        **base_conf,
        "group.id": f"stream-infer-tail-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "logger": get_logger("librdkafka"),
    }
    client = Consumer(conf)
    try:
        info = client.list_topics(topic, timeout=10).topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaClientError(f"topic '{topic}' does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        client.assign([TopicPartition(topic, p, start) for p in sorted(info.partitions)])
        seen = 0
        last = time.monotonic()
        while not stop() and (count is None or seen < count):
            msgs = client.consume(min(500, count - seen) if count else 500, 0.2)
            good = [m for m in msgs if m.error() is None]
            if good:
                last = time.monotonic()
                for m in good:
                    seen += 1
                    yield m
            elif idle_timeout is not None and time.monotonic() - last > idle_timeout:
                return
    finally:
        client.close()
