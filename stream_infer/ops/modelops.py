"""Metrics of model operations: hot reloads, per-version inference, the shadow and its agreement.

Counted per batch (never per row) into plain dictionaries and read by a
collector at scrape time, like the rest of the worker's metrics; only the
per-version duration is a prometheus-client histogram. ``stream_infer_model_info``
itself stays the primary's (``WorkerMetrics``); ``stream_infer_variant_info``
lists every model this worker answers with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream_infer.inference.agreement import AgreementMonitor
from stream_infer.ops.metrics import INFERENCE_BUCKETS, counter_by

__all__ = ["ModelOpsMetrics", "VariantInfo"]


@dataclass(frozen=True, slots=True)
class VariantInfo:
    variant: str  # primary | canary | shadow
    model: str
    version: str
    provider: str


class ModelOpsMetrics:
    """Everything hot reload, canary and shadow export (thread-safe: several threads count)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self.reloads = {"ok": 0, "refused": 0}
        self.rows: dict[tuple[str, str, str], int] = {}  # (variant, version, result) -> rows
        self.shadow_batches = {"ok": 0, "failed": 0, "dropped": 0}
        self.shadow_records = {"delivered": 0, "failed": 0}
        self.variants: Callable[[], list[VariantInfo]] = list
        self.agreement: AgreementMonitor | None = None
        self.duration = Histogram(
            "stream_infer_variant_inference_duration_seconds",
            "Duration of one inference call, per variant (primary, canary, shadow) and version.",
            labelnames=["variant", "version"],
            buckets=INFERENCE_BUCKETS,
            registry=registry,
        )

    # -- counting (any thread) --------------------------------------------------------

    def reloaded(self, result: str) -> None:
        with self._lock:
            self.reloads[result] = self.reloads.get(result, 0) + 1

    def answered(self, variant: str, version: str, predicted: int, failed: int = 0) -> None:
        """Rows a variant predicted, and rows it failed on alone (dead-lettered or fallen back)."""
        with self._lock:
            for result, n in (("predicted", predicted), ("failed", failed)):
                if n:
                    key = (variant, version, result)
                    self.rows[key] = self.rows.get(key, 0) + n

    def timed(self, variant: str, version: str, seconds: float) -> None:
        self.duration.labels(variant, version).observe(seconds)

    def shadow_batch(self, result: str) -> None:
        with self._lock:
            self.shadow_batches[result] += 1

    def shadow_record(self, result: str, n: int = 1) -> None:
        with self._lock:
            self.shadow_records[result] += n

    # -- scraping -------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            reloads = dict(self.reloads)
            rows = dict(self.rows)
            batches = dict(self.shadow_batches)
            records = dict(self.shadow_records)
        yield counter_by(
            "stream_infer_model_reloads",
            "Hot reloads of model.path: ok (serving the new file) or refused (the old one serves).",
            "result",
            reloads,
        )
        info = GaugeMetricFamily(
            "stream_infer_variant_info",
            "Every model this worker answers with: primary, canary, shadow.",
            labels=["variant", "model", "version", "provider"],
        )
        for v in self.variants():
            info.add_metric([v.variant, v.model, v.version, v.provider], 1)
        yield info
        answered = CounterMetricFamily(
            "stream_infer_variant_rows",
            "Rows each variant and version predicted, or failed on alone.",
            labels=["variant", "version", "result"],
        )
        for (variant, version, result), n in sorted(rows.items()):
            answered.add_metric([variant, version, result], n)
        yield answered
        if self.agreement is None:
            return
        yield from self._shadow(batches, records, self.agreement)

    def _shadow(
        self, batches: dict[str, int], records: dict[str, int], monitor: AgreementMonitor
    ) -> Iterator[Metric]:
        yield counter_by(
            "stream_infer_shadow_batches",
            "Batches the shadow ran (ok), failed on, or dropped because it was behind.",
            "result",
            batches,
        )
        yield counter_by(
            "stream_infer_shadow_records",
            "Shadow predictions delivered to the shadow topic, or given up on.",
            "result",
            records,
        )
        snap = monitor.snapshot()
        agreement = GaugeMetricFamily(
            "stream_infer_shadow_agreement",
            "Share of rows (recent window) where shadow and primary agree: equal integer "
            "outputs, equal argmax of float vectors.",
            labels=["output"],
        )
        diff = GaugeMetricFamily(
            "stream_infer_shadow_mean_abs_diff",
            "Mean absolute difference per row between shadow and primary (recent window).",
            labels=["output"],
        )
        compared = CounterMetricFamily(
            "stream_infer_shadow_compared_rows",
            "Rows on which shadow and primary were compared.",
            labels=["output"],
        )
        agreed = CounterMetricFamily(
            "stream_infer_shadow_agreeing_rows",
            "Rows where shadow and primary agree.",
            labels=["output"],
        )
        summed = CounterMetricFamily(
            "stream_infer_shadow_abs_diff",
            "Per-row mean absolute differences, summed (rate() it against the rows compared).",
            labels=["output"],
        )
        for name, a in sorted(snap.items()):
            if a.agreement is not None:
                agreement.add_metric([name], a.agreement)
            if a.mean_abs_diff is not None:
                diff.add_metric([name], a.mean_abs_diff)
            compared.add_metric([name], a.rows)
            if a.compared:  # agreement is defined for this output (not one float per row)
                agreed.add_metric([name], a.agreed)
            summed.add_metric([name], a.abs_diff)
        yield from (agreement, diff, compared, agreed, summed)
