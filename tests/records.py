"""A consumed record as the pipeline reads it, for unit tests that need no broker.

Only plain fields: it makes no claim about Kafka's behaviour (tests of that use the
real broker); it is the shape of ``confluent_kafka.Message`` that the codec, the
envelopes and the books read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Record:
    offset_: int = 0
    partition_: int = 0
    topic_: str = "events"
    value_: bytes | None = b"v"
    key_: bytes | None = b"k"
    headers_: list[Any] | None = None
    timestamp_: int = 1_764_000_000_000

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_)

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[Any] | None:
        return self.headers_
