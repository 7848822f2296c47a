"""Consumer-group lag for people: ``stream-infer lag`` as a table, JSON, or a live view.

The figures come from :func:`stream_infer.ops.group.read_group`, the same
reading the workers export as ``stream_infer_consumer_lag``, so the command and
the dashboard never disagree. The watch view adds rates: how fast each
partition's end offset grows (events in) and its committed offset follows
(events done).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from stream_infer.errors import KafkaClientError
from stream_infer.ops.group import GroupSnapshot, PartitionLag, offsets_reader, read_group

__all__ = ["LagView", "PartitionLag", "group_lag", "group_snapshot", "watch"]


def group_snapshot(
    base_conf: dict[str, Any], group: str, topics: list[str], timeout: float = 10.0
) -> GroupSnapshot:
    """One look at the group through a short-lived admin client, errors as one clear line.

    A coordinator that is still loading or moving (a fresh or restarted broker
    answers NOT_COORDINATOR for a few seconds) is asked again within ``timeout``.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

    from stream_infer.kafka.admin import missing_topic_hint
    from stream_infer.logging import get_logger

    conf: dict[str, Any] = {**base_conf, "logger": get_logger("librdkafka")}
    admin = AdminClient(conf)
    reader = offsets_reader(base_conf, group)
    started = time.monotonic()
    try:
        for attempt in Retrying(
            retry=retry_if_exception(_coordinator_moving),
            wait=wait_exponential(multiplier=0.1, max=1.0),
            stop=stop_after_delay(timeout),
            reraise=True,
        ):
            with attempt:
                left = max(1.0, timeout - (time.monotonic() - started))
                return read_group(admin, reader, group, topics, timeout=left)
        raise AssertionError("unreachable: tenacity re-raises the last error")
    except LookupError as exc:
        missing = [t for t in topics if f"'{t}'" in str(exc)]
        raise KafkaClientError(f"{exc} ({missing_topic_hint(missing)})") from None
    except KafkaException as exc:
        raise KafkaClientError(f"reading the lag of group '{group}' failed", exc.args[0]) from None
    finally:
        reader.close()


def _coordinator_moving(exc: BaseException) -> bool:
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException):
        return False
    err = exc.args[0]
    return bool(err.retriable()) or err.code() in {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }


def group_lag(
    base_conf: dict[str, Any], group: str, topics: list[str], timeout: float = 10.0
) -> list[PartitionLag]:
    """Committed offset, end offset and lag of every partition of ``topics``."""
    return group_snapshot(base_conf, group, topics, timeout).partitions


@dataclass(frozen=True)
class LagView:
    """One refresh of the watch view: the snapshot, with rates against the previous one."""

    group: str
    snapshot: GroupSnapshot
    rates: dict[tuple[str, int], tuple[float, float]]  # (in/s, done/s) per partition

    def as_dict(self) -> dict[str, Any]:
        snap = self.snapshot
        rows = []
        for p in snap.partitions:
            row: dict[str, Any] = {
                "topic": p.topic,
                "partition": p.partition,
                "committed": p.committed,
                "end": p.high,
                "lag": p.lag,
            }
            rate = self.rates.get((p.topic, p.partition))
            if rate is not None:
                row["in_per_s"], row["done_per_s"] = round(rate[0], 1), round(rate[1], 1)
            rows.append(row)
        return {
            "group": self.group,
            "members": snap.members,
            "total_lag": snap.total_lag,
            "partitions": rows,
        }


def watch(
    read: Callable[[], GroupSnapshot],
    group: str,
    interval: float,
    times: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[LagView]:
    """Views every ``interval`` seconds (``times`` of them, 0 = for ever)."""
    previous: GroupSnapshot | None = None
    n = 0
    while not times or n < times:
        if n:
            sleep(interval)
        snap = read()
        rates: dict[tuple[str, int], tuple[float, float]] = {}
        if previous is not None and snap.taken_at > previous.taken_at:
            dt = snap.taken_at - previous.taken_at
            before = {(p.topic, p.partition): p for p in previous.partitions}
            for p in snap.partitions:
                old = before.get((p.topic, p.partition))
                if old is None:
                    continue
                done_now = p.committed if p.committed is not None else p.low
                done_then = old.committed if old.committed is not None else old.low
                rates[(p.topic, p.partition)] = (
                    max(0, p.high - old.high) / dt,
                    max(0, done_now - done_then) / dt,
                )
        previous = snap
        n += 1
        yield LagView(group, snap, rates)
