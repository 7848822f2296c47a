"""Getting events into Kafka: JSON lines from a file or stdin, the demo dataset, or generated rows.

Used by ``stream-infer produce`` and ``stream-infer dev``; paced by a simple
rate limiter, and strict about delivery: the command fails if any event was
not acknowledged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import numpy as np
import orjson

from stream_infer.errors import KafkaClientError
from stream_infer.inference.model import Signature
from stream_infer.logging import get_logger

__all__ = [
    "POISON_KEY",
    "demo_value_events",
    "generated_events",
    "line_events",
    "produce_events",
    "with_poison",
]

Event = tuple[bytes | None, bytes]


def line_events(stream: IO[bytes], key_field: str | None = None) -> Iterator[Event]:
    """One event per non-blank line, sent as is (bad JSON included: useful for testing)."""
    for line in stream:
        value = line.rstrip(b"\r\n")
        if not value.strip():
            continue
        key = None
        if key_field:
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict) and doc.get(key_field) is not None:
                key = str(doc[key_field]).encode()
        yield key, value


def demo_value_events(loop: bool) -> Iterator[Event]:
    from stream_infer.tools.demo import demo_events

    for key, event in demo_events(loop=loop):
        yield key, orjson.dumps(event)


POISON_KEY = b"poison"
# What a demo stream mixes in so that the dead-letter topic has something to show: one
# event that is not JSON (stage decode), one with too few features (stage validate).
_POISON = (
    b'{"id": "poison", "features": "thirty numbers"',
    b'{"id": "poison", "features": [1, 2, 3]}',
)


def with_poison(events: Iterable[Event], every: int) -> Iterator[Event]:
    """``events`` with every ``every``-th one replaced by a poison event (0: none)."""
    for n, event in enumerate(events, start=1):
        if every and n % every == 0:
            yield POISON_KEY, _POISON[(n // every) % 2]
        else:
            yield event


def generated_events(signature: Signature, seed: int = 0) -> Iterator[Event]:
    """Random rows that fit the model's inputs (dynamic axes get length 4)."""
    rng = np.random.default_rng(seed)
    single = len(signature.inputs) == 1
    for n in itertools.count():
        feats: dict[str, Any] = {}
        for spec in signature.inputs:
            shape = tuple(4 if d is None else d for d in spec.shape)
            if spec.kind == "b":
                value: Any = rng.integers(0, 2, size=shape).astype(bool).tolist()
            elif spec.kind in "iu":
                value = rng.integers(0, 10, size=shape).tolist()
            elif spec.kind == "O":
                value = np.full(shape, f"text-{n}", dtype=object).tolist()
            else:
                value = np.round(rng.normal(size=shape), 4).tolist()
            feats[spec.name] = value
        features = next(iter(feats.values())) if single else feats
        yield str(n).encode(), orjson.dumps({"id": n, "features": features})


class _Pacer:
    """Sleeps just enough to hold ``rate`` events per second (0 = flat out)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()

    def wait(self, sent: int) -> None:
        if self.rate <= 0:
            return
        ahead = sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0.002:
            time.sleep(ahead)


def produce_events(
    conf: dict[str, Any],
    topic: str,
    events: Iterable[Event],
    rate: float = 0.0,
    count: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce ``events`` (at most ``count``) at ``rate``/s; returns how many were acknowledged."""
    from confluent_kafka import KafkaError, Producer

    conf = {"linger.ms": 5, "enable.idempotence": True, **conf}
    conf.setdefault("logger", get_logger("librdkafka"))
    producer = Producer(conf)
    failures: list[KafkaError] = []
    acked = 0

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            failures.append(err)

    pacer = _Pacer(rate)
    source = events if count is None else itertools.islice(events, count)
    sent = 0
    for key, value in source:
        if stop() or failures:
            break
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        producer.poll(0)
        if progress is not None and sent % 1000 == 0:
            progress(sent)
        pacer.wait(sent)
    left = producer.flush(30)
    if failures:
        raise KafkaClientError(
            f"{len(failures)} events were not delivered to '{topic}'", failures[0]
        )
    if left:
        raise KafkaClientError(f"{left} events to '{topic}' were still unacknowledged after 30s")
    if progress is not None:
        progress(sent)
    return acked
