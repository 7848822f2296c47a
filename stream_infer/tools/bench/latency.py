"""Event-to-prediction latency at a fixed offered rate.

The load comes from an open-loop generator process (``openloop.py``) that stamps
every event with the wall-clock time it was due. A reader in the harness process
consumes the output topic (``read_committed``, so a transactional contender's
outputs count once they are visible to a consumer) and records, per output,
receive time minus that stamp. The stamp travels in the prediction's
``event_time_ms`` (stream-infer, the hand loops, Faust) or, for the bare loop,
as the output's own timestamp, copied from the input. Generator, contender and
reader run on this machine and read one clock (``time.time``); Kafka timestamps
are whole milliseconds, so each figure is good to about 1 ms.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from stream_infer.tools.bench.process import ContenderFailed
from stream_infer.tools.bench.stats import LatencySummary

__all__ = ["LatencyStep", "OutputReader", "delivered_rate", "offered_load"]


def delivered_rate(due_ms: np.ndarray, latency_us: np.ndarray) -> float:
    """Outputs per second between the first and the last receive time of these records.

    Below the offered rate, the contender (with the generator and reader beside it on
    the same cores) did not keep up: its latency grew for as long as the step lasted.
    """
    if len(due_ms) < 2:
        return 0.0
    received_ms = due_ms + latency_us / 1000.0
    span = float(received_ms.max() - received_ms.min()) / 1000.0
    return len(due_ms) / span if span > 0 else 0.0


@dataclass
class LatencyStep:
    """One offered rate held for a while against one contender."""

    contender: str
    load: float  # share of the contender's measured max
    offered: float  # events per second
    sent: int = 0
    received: int = 0
    generator_lag_ms: float = 0.0
    delivered: float = 0.0  # outputs per second received over the measured seconds
    summary: LatencySummary | None = None  # the measured seconds
    settling: LatencySummary | None = None  # the seconds before, at the same rate
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "contender": self.contender,
            "load": self.load,
            "offered_per_s": self.offered,
            "sent": self.sent,
            "received": self.received,
            "generator_max_lag_ms": self.generator_lag_ms,
            "delivered_per_s": self.delivered,
            **(self.summary.as_dict() if self.summary else {}),
            "settling": self.settling.as_dict() if self.settling else None,
            "error": self.error,
        }


class OutputReader:
    """Reads an output topic from its start on a thread; keeps (due time, latency) per record."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, event_time: Literal["json", "timestamp"]
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "stream-infer-bench-reader",  # never joins: assign() only
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._from_json = event_time == "json"
        self._due = array("q")
        self._latency_us = array("q")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.total = 0
        self.unreadable = 0
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poll, consume = self._consumer.poll, self._consumer.consume
        loads, from_json = orjson.loads, self._from_json
        while not self._stop.is_set():
            # poll returns with the first record (a batch consume would wait for its
            # count or its timeout, and add that wait to every latency); what else is
            # already fetched arrived no later than that record was handed over.
            first = poll(0.05)
            if first is None:
                continue
            now_ms = time.time() * 1000.0
            msgs = [first, *consume(10_000, 0)]
            due: list[int] = []
            for m in msgs:
                if m.error() is not None:
                    continue
                try:
                    t = (
                        int(loads(m.value() or b"")["event_time_ms"])
                        if from_json
                        else m.timestamp()[1]
                    )
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    self.unreadable += 1
                    continue
                due.append(t)
            lat = [int((now_ms - t) * 1000.0) for t in due]
            with self._lock:
                self._due.extend(due)
                self._latency_us.extend(lat)
                self.total += len(due)
        self._consumer.close()

    def latencies(self, first_ms: int, last_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Due times (ms) and latencies (us) of the records due within ``[first_ms, last_ms]``."""
        with self._lock:
            due = np.frombuffer(self._due, dtype=np.int64).copy()
            lat = np.frombuffer(self._latency_us, dtype=np.int64).copy()
        keep = (due >= first_ms) & (due <= last_ms)
        return due[keep], lat[keep]

    def wait_for(self, count: int, stall_s: float, alive: Callable[[], None]) -> bool:
        """Wait until ``count`` records are in; False when none came for ``stall_s``."""
        last, since = self.total, time.monotonic()
        while self.total < count:
            alive()
            if self.total != last:
                last, since = self.total, time.monotonic()
            elif time.monotonic() - since > stall_s:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def offered_load(
    bootstrap: str, topic: str, model: str, rate: float, duration: float, log: Any
) -> dict[str, Any]:
    """Run the open-loop generator to the end; its report."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_infer.tools.bench.openloop",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--model",
            model,
            "--rate",
            f"{rate:.3f}",
            "--duration",
            f"{duration:.3f}",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        timeout=duration + 120,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ContenderFailed(f"the load generator failed (exit {done.returncode})")
    report: dict[str, Any] = json.loads(lines[-1])
    return report
