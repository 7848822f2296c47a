"""One worker's operational side in one place: metrics, health, the group view, desired replicas.

The worker calls a handful of methods at the points where something happens
(a batch consumed, a model call, a batch acknowledged); everything else is read
from its state at scrape time. Nothing here touches the worker's Kafka clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric

from stream_infer.config import Settings
from stream_infer.inference.drift import DriftMonitor, DriftSnapshot
from stream_infer.logging import get_logger
from stream_infer.ops.group import GroupSnapshot, GroupWatcher
from stream_infer.ops.health import Health
from stream_infer.ops.metrics import MetricsServer, WorkerMetrics
from stream_infer.ops.scaling import CapacityMeter, desired_replicas

__all__ = ["Telemetry"]

log = get_logger("ops")


class Telemetry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s = settings
        self.health = Health(s.health)
        self.capacity = CapacityMeter()
        self.watcher = GroupWatcher(
            s.kafka.admin_config(),
            s.kafka.group_id,
            s.topics.inputs,
            s.metrics.lag_interval_s,
            s.scaling.rate_window_s,
            on_refresh=self._refreshed,
        )
        self.health.broker_answered = lambda: self.watcher.last_ok
        self.health.broker_fresh_s = max(10.0, 3 * s.metrics.lag_interval_s)
        self.desired: int | None = None
        self.metrics = WorkerMetrics(
            group=s.kafka.group_id,
            model=s.model.name,
            version=s.model.version,
            input_topics=list(s.topics.inputs),
            health=self.health,
            lag=self._lag,
            lag_age=self._lag_age,
            members=lambda: self.watcher.snapshot.members if self.watcher.snapshot else None,
            input_rate=lambda: self.watcher.rate.rate() if self.watcher.snapshot else None,
            capacity=lambda: self.capacity.capacity,
            desired=lambda: self.desired,
        )
        self.server: MetricsServer | None = None

    # -- lifecycle --------------------------------------------------------------

    def serve(self) -> None:
        """Start the HTTP endpoints: before the model loads, so /readyz can say 'not yet'."""
        m = self.settings.metrics
        try:
            self.server = MetricsServer(m.address, m.port, self.metrics.registry, self.health)
        except OSError as exc:
            from stream_infer.errors import ConfigError

            raise ConfigError(
                f"metrics.port: cannot listen on {m.address}:{m.port}: {exc.strerror}"
            ) from None
        self.server.start()

    @property
    def url(self) -> str:
        """Where /metrics answers, for people (said once start-up went through)."""
        address = self.settings.metrics.address
        shown = "localhost" if address in ("0.0.0.0", "::") else address
        return f"http://{shown}:{self.port}/metrics"

    def watch(self) -> None:
        self.watcher.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the group view (up to ``timeout`` for its request in flight), then the server."""
        self.watcher.stop(timeout=max(0.1, timeout))
        if self.server is not None:
            self.server.stop()

    @property
    def port(self) -> int | None:
        return self.server.port if self.server is not None else None

    # -- events from the worker ---------------------------------------------------

    def model_loaded(self, provider: Callable[[], str]) -> None:
        self.metrics.provider = provider
        self.health.model_ready = True

    def consumed(self, topic_counts: dict[str, int], rows: int) -> None:
        counts = self.metrics.consumed
        for topic, n in topic_counts.items():
            counts[topic] = counts.get(topic, 0) + n
        self.capacity.add(rows=rows)

    def waited(self, seconds: float) -> None:
        """The loop sat waiting for records that did not come (idle, not busy)."""
        self.capacity.add(loop_idle_s=seconds)

    def inference_call(self, started: float | None) -> None:
        self.health.inference_started = started

    def inference_result(self, rows: int, seconds: float, lanes: int = 1) -> None:
        """One model call; with ``lanes`` calls at once, each keeps 1/lanes of the stage busy."""
        self.metrics.observe_inference(rows, seconds)
        self.capacity.add(infer_busy_s=seconds / lanes)

    def watch_drift(self, monitor: DriftMonitor | Callable[[], DriftMonitor | None]) -> None:
        """Export PSI per feature and output value, computed at scrape time (always fresh).

        Given a callable, the monitor it returns at each scrape (a hot reload swaps it).
        """
        current = monitor if callable(monitor) else lambda: monitor

        def families() -> Iterator[Metric]:
            live = current()
            if live is not None:
                yield from _drift_families(live.snapshot())

        self.metrics.extra.append(families)

    def batch_acknowledged(self, timestamps: Sequence[int]) -> None:
        """Every output of a batch is acknowledged: the end-to-end latency of its events."""
        stamps = np.asarray(timestamps, dtype=np.float64)
        latency = (time.time() * 1000.0 - stamps) / 1000.0
        np.maximum(latency, 0.0, out=latency)  # a producer clock ahead of ours is not negative time
        self.metrics.latency.observe_many(latency)

    # -- the group view -------------------------------------------------------------

    def _lag(self) -> list[tuple[str, int, int]]:
        snap = self.watcher.snapshot
        return [] if snap is None else [(p.topic, p.partition, p.lag) for p in snap.partitions]

    def _lag_age(self) -> float | None:
        snap = self.watcher.snapshot
        return None if snap is None else time.monotonic() - snap.taken_at

    def _refreshed(self, snap: GroupSnapshot) -> None:
        s = self.settings.scaling
        self.desired = desired_replicas(
            input_rate=self.watcher.rate.rate(),
            lag=snap.total_lag,
            capacity=self.capacity.roll(),
            partitions=len(snap.partitions),
            members=snap.members,
            drain_target_s=s.drain_target_s,
            target_utilization=s.target_utilization,
        )

    def describe(self) -> dict[str, Any]:
        """A plain summary (for `stream-infer dev` and logs)."""
        snap = self.watcher.snapshot
        return {
            "lag": snap.total_lag if snap else None,
            "input_rate": self.watcher.rate.rate() if snap else None,
            "desired": self.desired,
            "capacity": self.capacity.capacity,
        }


def _drift_families(snap: DriftSnapshot) -> Iterator[Metric]:
    """The SPEC's PSI gauges plus the window's output moments; nothing for an empty window."""
    if not snap.rows:
        return
    rows = GaugeMetricFamily(
        "stream_infer_drift_window_rows", "Predicted rows in the drift window.", snap.rows
    )
    yield rows
    for name, doc, values, labels in (
        (
            "stream_infer_feature_drift_psi",
            "PSI of one input feature over the window against the baseline.",
            snap.features,
            ["input", "feature"],
        ),
        (
            "stream_infer_output_drift_psi",
            "PSI of one output value over the window against the baseline.",
            snap.outputs,
            ["output", "index"],
        ),
        (
            "stream_infer_output_window_mean",
            "Mean of one output value over the drift window.",
            snap.output_mean,
            ["output", "index"],
        ),
        (
            "stream_infer_output_window_stddev",
            "Standard deviation of one output value over the drift window.",
            snap.output_std,
            ["output", "index"],
        ),
    ):
        family = GaugeMetricFamily(name, doc, labels=labels)
        for (tensor, position), value in values.items():
            family.add_metric([tensor, position], value)
        yield family
