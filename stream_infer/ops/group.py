"""The whole consumer group as the admin API sees it: lag per partition, input rate, members.

Every replica reads the group's committed offsets and the high watermarks of
*every* input partition, not only the partitions it owns, so the lag of a
frozen or dead replica stays visible on the healthy ones (and an autoscaler
can read any replica). A background thread refreshes the view at
``metrics.lag_interval_s``; it never touches the worker's own clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_infer.logging import get_logger
from stream_infer.ops.scaling import RateMeter

__all__ = ["GroupSnapshot", "GroupWatcher", "PartitionLag", "offsets_reader", "read_group"]

log = get_logger("group")


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


@dataclass(frozen=True)
class GroupSnapshot:
    partitions: list[PartitionLag]
    members: int
    taken_at: float = field(default_factory=time.monotonic)

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def total_high(self) -> int:
        return sum(p.high for p in self.partitions)


def _results(futures: dict[Any, Any]) -> dict[Any, Any]:
    # No timeout of our own: librdkafka's request_timeout ends every request, and a
    # future abandoned while its request is still out can be completed after the
    # client is gone (a crash, seen when the broker died mid-request).
    return {key: fut.result() for key, fut in futures.items()}


def offsets_reader(base_conf: dict[str, Any], group: str) -> Any:
    """A consumer of ``group`` that never joins it: it only reads the committed offsets.

    Not the admin API's ListConsumerGroupOffsets: librdkafka 2.16 crashes the
    process when that request meets a coordinator that moved (a NULL group
    handle in an admin client; confluentinc/librdkafka#5040, open), which is
    what happens after a broker restart. ``Consumer.committed`` takes the
    consumer's own, sound path. ``read_uncommitted``: a transaction in flight
    must not hold the lag view up (its offsets count once committed).
    """
    from confluent_kafka import Consumer

    return Consumer(
        {
            **base_conf,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "logger": get_logger("librdkafka"),
        }
    )


def read_group(
    admin: Any, reader: Any, group: str, topics: list[str], timeout: float = 10.0
) -> GroupSnapshot:
    """One consistent-enough look at the group: committed offsets, watermarks, members.

    ``reader`` comes from :func:`offsets_reader`. Raises ``KafkaException``
    (the broker is away) or ``LookupError`` (an input topic does not exist) for
    the caller to report.
    """
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    spec: Any = OffsetSpec  # untyped in the stubs

    meta = admin.list_topics(timeout=timeout)
    tps: list[TopicPartition] = []
    for name in topics:
        info = meta.topics.get(name)
        if info is None or info.error is not None:
            raise LookupError(f"topic '{name}' does not exist")
        tps.extend(TopicPartition(name, p) for p in sorted(info.partitions))
    committed = {
        (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
        for tp in reader.committed(tps, timeout=timeout)
    }
    latest = _results(
        admin.list_offsets({tp: spec.latest() for tp in tps}, request_timeout=timeout)
    )
    highs = {(tp.topic, tp.partition): info.offset for tp, info in latest.items()}
    need_low = [tp for tp in tps if committed.get((tp.topic, tp.partition)) is None]
    lows: dict[tuple[str, int], int] = {}
    if need_low:
        earliest = admin.list_offsets(
            {tp: spec.earliest() for tp in need_low}, request_timeout=timeout
        )
        lows = {(tp.topic, tp.partition): info.offset for tp, info in _results(earliest).items()}
    described = admin.describe_consumer_groups([group], request_timeout=timeout)
    members = len(described[group].result().members)
    rows = [
        PartitionLag(
            tp.topic,
            tp.partition,
            committed.get((tp.topic, tp.partition)),
            lows.get((tp.topic, tp.partition), 0),
            highs[(tp.topic, tp.partition)],
        )
        for tp in tps
    ]
    return GroupSnapshot(rows, members)


class GroupWatcher:
    """Refreshes a :class:`GroupSnapshot` in the background and keeps the input rate.

    ``last_ok`` (monotonic seconds) tells the health check whether the broker
    answers: a worker whose outputs are not acknowledged while the broker
    answers is stuck, one whose broker is away is merely waiting.
    """

    def __init__(
        self,
        admin_conf: dict[str, Any],
        group: str,
        topics: list[str],
        interval_s: float,
        rate_window_s: float,
        on_refresh: Callable[[GroupSnapshot], None] | None = None,
    ) -> None:
        self._conf = {**admin_conf, "log_level": 3}  # errors only: the loop reports the rest
        self._group = group
        self._topics = topics
        self.interval_s = interval_s
        self.rate = RateMeter(rate_window_s)
        self._on_refresh = on_refresh
        self.snapshot: GroupSnapshot | None = None
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stream-infer-group", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 0.0) -> None:
        """Ask the thread to end; with ``timeout``, wait for its request in flight too."""
        self._stop.set()
        if timeout and self._thread.is_alive():
            self._thread.join(timeout)

    def refresh(self, admin: Any, reader: Any) -> None:
        snap = read_group(
            admin, reader, self._group, self._topics, timeout=max(2.0, self.interval_s * 2)
        )
        self.rate.add(snap.total_high, snap.taken_at)
        self.snapshot = snap
        self.last_ok = snap.taken_at
        self.last_error = None
        if self._on_refresh is not None:
            self._on_refresh(snap)

    def _loop(self) -> None:
        from confluent_kafka.admin import AdminClient

        conf = dict(self._conf)
        conf.setdefault("logger", get_logger("librdkafka"))
        admin = AdminClient(conf)
        reader = offsets_reader(self._conf, self._group)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh(admin, reader)
            except Exception as exc:  # the broker is away, or a topic vanished: say so once
                text = str(exc)
                if text != self.last_error:
                    log.warning("cannot read the group's lag: %s", text)
                self.last_error = text
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        reader.close()
