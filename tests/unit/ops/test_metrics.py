"""The exposition: names, labels and histogram arithmetic, parsed back with Prometheus' parser."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.config import HealthSettings
from stream_infer.ops.health import Health
from stream_infer.ops.metrics import BatchHistogram, MetricsServer, WorkerMetrics


def _samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_batch_histogram_counts_each_value_in_its_le_bucket() -> None:
    hist = BatchHistogram([0.1, 1.0, 10.0])
    values = np.array([0.05, 0.1, 0.5, 1.0, 3.0, 50.0])
    hist.observe_many(values)
    hist.observe_many(np.array([]))
    family = hist.family("h", "doc")
    got = {s.labels["le"]: s.value for s in family.samples if s.name == "h_bucket"}
    # Counted by hand: le=0.1 holds 0.05 and 0.1; le=1 adds 0.5 and 1.0; le=10 adds 3.0.
    assert got == {"0.1": 2, "1.0": 4, "10.0": 5, "+Inf": 6}
    sums = {s.name: s.value for s in family.samples}
    assert sums["h_count"] == 6 and sums["h_sum"] == float(values.sum())


def test_every_spec_metric_is_exported_with_its_labels() -> None:
    health = Health(HealthSettings())
    metrics = WorkerMetrics(
        group="g",
        model="demo",
        version="7",
        input_topics=["a", "b"],
        provider=lambda: "CPUExecutionProvider",
        predictions=lambda: 41,
        assigned=lambda: 3,
        lag=lambda: [("a", 0, 5), ("a", 1, 0), ("b", 0, 12)],
        desired=lambda: 2,
        members=lambda: 1,
        input_rate=lambda: 10.0,
        health=health,
    )
    metrics.consumed["a"] += 40
    metrics.consumed["b"] += 2
    metrics.dead_letters["decode"] += 1
    metrics.observe_inference(40, 0.002)
    metrics.latency.observe_many(np.array([0.01, 0.02]))
    got = _samples(metrics)
    assert (
        got[("stream_infer_consumer_lag", (("group", "g"), ("partition", "0"), ("topic", "b")))]
        == 12
    )
    assert got[("stream_infer_consumed_messages_total", (("topic", "a"),))] == 40
    assert got[("stream_infer_consumed_messages_total", (("topic", "b"),))] == 2
    assert got[("stream_infer_predictions_total", ())] == 41
    assert got[("stream_infer_dead_letters_total", (("stage", "decode"),))] == 1
    assert got[("stream_infer_dead_letters_total", (("stage", "inference"),))] == 0
    assert got[("stream_infer_batch_size_count", ())] == 1
    assert got[("stream_infer_batch_size_sum", ())] == 40
    assert got[("stream_infer_inference_duration_seconds_count", ())] == 1
    assert got[("stream_infer_end_to_end_latency_seconds_count", ())] == 2
    info = (("model", "demo"), ("provider", "CPUExecutionProvider"), ("version", "7"))
    assert got[("stream_infer_model_info", info)] == 1
    assert got[("stream_infer_assigned_partitions", ())] == 3
    assert got[("stream_infer_desired_replicas", (("group", "g"),))] == 2
    assert got[("stream_infer_ready", ())] == 0


def test_server_answers_metrics_health_and_readiness() -> None:
    health = Health(HealthSettings())
    metrics = WorkerMetrics(group="g", model="m", version="1", input_topics=["a"], health=health)
    server = MetricsServer("127.0.0.1", 0, metrics.registry, health)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "stream_infer_model_info" in body
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert refused.value.code == 503 and b"model" in refused.value.read()
        health.model_ready = health.joined = True
        assert urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
    finally:
        server.stop()
