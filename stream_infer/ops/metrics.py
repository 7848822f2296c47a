"""Prometheus metrics (SPEC.md section 5) and the HTTP server for /metrics, /healthz, /readyz.

Counters are plain integers that the worker already keeps, read at scrape
time by a custom collector, so counting costs the hot path nothing; only the
two per-batch histograms are prometheus-client objects. The end-to-end latency
histogram is fed a whole batch at a time with numpy (one ``searchsorted`` per
batch instead of one locked ``observe`` per event).

Each worker owns its registry and server, so several workers can share one
process (tests do) without colliding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stream_infer.logging import get_logger
from stream_infer.ops.health import Health, Verdict

__all__ = [
    "BATCH_BUCKETS",
    "INFERENCE_BUCKETS",
    "LATENCY_BUCKETS",
    "BatchHistogram",
    "MetricsServer",
    "WorkerMetrics",
    "counter_by",
]

log = get_logger("metrics")

# `*_created` series double the exposition and no dashboard or alert of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

STAGES = ("decode", "validate", "inference", "produce")
# Rows per model call: powers of two up to the largest max_batch_size allowed.
BATCH_BUCKETS = tuple(float(2**i) for i in range(0, 17))
# One model call: a tiny tabular model runs a batch in ~50 µs on a CPU, a big one in seconds.
INFERENCE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Event time to acknowledged output: a few ms when keeping up, minutes when draining a backlog.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


def counter_by(name: str, doc: str, label: str, values: Mapping[str, float]) -> Metric:
    """A counter family with one series per key of ``values`` (read from a copy of it)."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in list(values.items()):
        family.add_metric([key], n)
    return family


class BatchHistogram:
    """A Prometheus histogram observed a numpy array at a time (thread-safe)."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = np.asarray(tuple(bounds), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: +Inf only
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        if not values.size:
            return
        # le-buckets: a value equal to a bound belongs to that bound's bucket.
        slots = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(slots, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [
            (repr(float(b)), c) for b, c in zip(self.bounds.tolist(), cumulative, strict=False)
        ]
        buckets.append(("+Inf", cumulative[-1]))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


@dataclass(eq=False)  # hashable: the registry keys collectors by identity
class WorkerMetrics(Collector):
    """Everything a worker exports; gauges are read through callables at scrape time."""

    group: str
    model: str
    version: str
    input_topics: list[str]
    provider: Callable[[], str] = lambda: "unknown"
    consumed: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    predictions: Callable[[], int] = lambda: 0
    assigned: Callable[[], int] = lambda: 0
    paused: Callable[[], bool] = lambda: False
    in_flight: Callable[[], int] = lambda: 0
    rebalances: Callable[[], dict[str, int]] = dict
    lag: Callable[[], list[tuple[str, int, int]]] = list  # (topic, partition, lag)
    lag_age: Callable[[], float | None] = lambda: None
    members: Callable[[], int | None] = lambda: None
    input_rate: Callable[[], float | None] = lambda: None
    capacity: Callable[[], float | None] = lambda: None
    desired: Callable[[], int | None] = lambda: None
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)
    health: Health | None = None

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.batch_size = Histogram(
            "stream_infer_batch_size",
            "Rows per inference call.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "stream_infer_inference_duration_seconds",
            "Duration of one inference call (one batch, or one part of a split batch).",
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.latency = BatchHistogram(LATENCY_BUCKETS)
        for topic in self.input_topics:
            self.consumed.setdefault(topic, 0)
        self.registry.register(self)

    def observe_inference(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.inference_duration.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        g = self.group
        yield counter_by(
            "stream_infer_consumed_messages",
            "Records consumed from input topics.",
            "topic",
            self.consumed,
        )
        yield CounterMetricFamily(
            "stream_infer_predictions",
            "Predictions acknowledged by the broker.",
            self.predictions(),
        )
        yield counter_by(
            "stream_infer_dead_letters",
            "Events sent to the dead-letter topic.",
            "stage",
            self.dead_letters,
        )
        yield self.latency.family(
            "stream_infer_end_to_end_latency_seconds",
            "Event timestamp to its output acknowledged by the broker.",
        )
        info = GaugeMetricFamily(
            "stream_infer_model_info",
            "The model served and the execution provider it really runs on.",
            labels=["model", "version", "provider"],
        )
        info.add_metric([self.model, self.version, self.provider()], 1)
        yield info
        yield GaugeMetricFamily(
            "stream_infer_assigned_partitions",
            "Input partitions this worker owns.",
            self.assigned(),
        )
        yield GaugeMetricFamily(
            "stream_infer_paused",
            "1 while backpressure has paused consumption.",
            int(self.paused()),
        )
        yield GaugeMetricFamily(
            "stream_infer_in_flight_batches",
            "Batches consumed but not yet fully acknowledged.",
            self.in_flight(),
        )
        yield counter_by(
            "stream_infer_rebalance_partitions",
            "Partitions assigned, revoked or lost in rebalances.",
            "kind",
            self.rebalances(),
        )
        yield from self._group_metrics(g)
        if self.health is not None:
            yield from _health_metrics(self.health.ready(), self.health.healthy())
        for source in self.extra:
            yield from source()

    def _group_metrics(self, g: str) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "stream_infer_consumer_lag",
            "Records between the group's committed offset and the high watermark, every input "
            "partition of the group (not only this worker's).",
            labels=["group", "topic", "partition"],
        )
        for topic, partition, n in self.lag():
            lag.add_metric([g, topic, str(partition)], n)
        yield lag
        for name, doc, value in (
            ("stream_infer_consumer_lag_age_seconds", "Age of the lag figures.", self.lag_age()),
            ("stream_infer_group_members", "Members of the consumer group.", self.members()),
            (
                "stream_infer_input_rate",
                "Events per second arriving on the input topics (all partitions).",
                self.input_rate(),
            ),
            (
                "stream_infer_desired_replicas",
                "Replicas needed to keep up with the input rate and drain the lag in time.",
                self.desired(),
            ),
        ):
            if value is not None:
                family = GaugeMetricFamily(name, doc, labels=["group"])
                family.add_metric([g], value)
                yield family
        capacity = self.capacity()
        if capacity is not None:
            yield GaugeMetricFamily(
                "stream_infer_capacity_events_per_second",
                "Events per second this replica processes when busy (measured).",
                capacity,
            )


def _health_metrics(ready: Verdict, healthy: Verdict) -> Iterator[Metric]:
    yield GaugeMetricFamily("stream_infer_ready", "1 when /readyz answers 200.", int(ready.ok))
    yield GaugeMetricFamily("stream_infer_healthy", "1 when /healthz answers 200.", int(healthy.ok))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path == "/metrics":
            self._send(200, generate_latest(srv.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            verdict = srv.health.healthy() if path == "/healthz" else srv.health.ready()
            self._send(200 if verdict.ok else 503, f"{verdict.reason}\n".encode())
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # scrapes every few seconds would drown the worker's own log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health


class MetricsServer:
    """The worker's HTTP endpoints on ``metrics.address``:``metrics.port`` (0: any free port)."""

    def __init__(
        self, address: str, port: int, registry: CollectorRegistry, health: Health
    ) -> None:
        self._server = _Server((address, port), _Handler)
        self._server.registry = registry
        self._server.health = health
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stream-infer-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
