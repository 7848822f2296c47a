"""Consumer-group lag: committed offset versus high watermark, for every input partition.

Computed for all partitions of the input topics, not only those one worker
owns, so any replica (or the CLI) sees the whole group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream_infer.errors import KafkaClientError

__all__ = ["PartitionLag", "group_lag"]


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed here yet
    low: int
    high: int

    @property
    def lag(self) -> int:
        """Records not yet processed; from the log start when nothing was committed."""
        start = self.committed if self.committed is not None and self.committed >= 0 else self.low
        return max(0, self.high - start)


def group_lag(
    base_conf: dict[str, Any], group: str, topics: list[str], timeout: float = 10.0
) -> list[PartitionLag]:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from stream_infer.kafka.admin import missing_topic_hint
    from stream_infer.logging import get_logger

    conf = {
        **base_conf,
        "group.id": group,
        "enable.auto.commit": False,
        "logger": get_logger("librdkafka"),
    }
    client = Consumer(conf)
    try:
        meta = client.list_topics(timeout=timeout)
        tps: list[TopicPartition] = []
        for name in topics:
            info = meta.topics.get(name)
            if info is None or info.error is not None:
                raise KafkaClientError(
                    f"topic '{name}' does not exist ({missing_topic_hint([name])})"
                )
            tps.extend(TopicPartition(name, p) for p in sorted(info.partitions))
        committed = client.committed(tps, timeout=timeout)
        rows = []
        for tp in committed:
            low, high = client.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout
            )
            rows.append(
                PartitionLag(
                    tp.topic, tp.partition, tp.offset if tp.offset >= 0 else None, low, high
                )
            )
        return rows
    except KafkaException as exc:
        raise KafkaClientError(f"reading the lag of group '{group}' failed", exc.args[0]) from None
    finally:
        client.close()
