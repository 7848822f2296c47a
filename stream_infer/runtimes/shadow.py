"""The shadow: a second model run on the primary's rows, on its own thread, to its own topic.

The inference thread hands each batch's predicted rows (with the primary's
outputs) to :meth:`ShadowStage.offer` once the batch's own outputs are
produced; it never waits: when the shadow is ``max_queued_batches`` behind, the
batch is dropped for the shadow (counted). The shadow thread runs its model on
the same decoded feeds, produces its predictions (the same envelope, its own
name and version, ``"variant": "shadow"``) to the shadow topic, and compares
them with the primary's (``inference.agreement``).

Nothing the shadow does can cost a primary prediction: its failures (a broken
session, rows it fails on, records the broker refuses) are counted and logged,
never raised. Its records go through a producer of their own, idempotent but
outside the worker's commit protocol (and outside exactly once's
transactions, which one failed shadow record would abort): they are
not waited for before offsets are committed, so a crash can lose some and a
batch redone after a crash or an abort is shadowed again. Read the shadow
topic as a sample for comparison, not as a ledger.

Running it on its own thread keeps the primary's latency where it was (see
the README for the measurement); the two models share the CPU cores.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from stream_infer.errors import InferenceError, kafka_error_text
from stream_infer.inference.agreement import AgreementMonitor, compare_outputs
from stream_infer.inference.batch import infer_rows
from stream_infer.inference.codec import Rows
from stream_infer.inference.envelope import Origins, SourceRecord
from stream_infer.inference.variants import Variant
from stream_infer.kafka.producer import OutputProducer
from stream_infer.logging import SampledLog, get_logger
from stream_infer.ops.modelops import ModelOpsMetrics

__all__ = ["ShadowStage"]

log = get_logger("shadow")

_QUEUE_FULL_WAIT_S = 1.0  # how long a shadow batch waits for room in librdkafka's queue


@dataclass(slots=True)
class _Item:
    records: Sequence[SourceRecord]
    origins: Origins
    parts: list[tuple[Rows, list[Any]]]  # the primary's rows and its outputs for them
    primary_outputs: tuple[str, ...]  # the primary's output names (a reload may change them)


class ShadowStage:
    def __init__(
        self,
        variant: Variant,
        producer: OutputProducer,
        topic: str,
        metrics: ModelOpsMetrics,
        agreement: AgreementMonitor,
        max_queued_batches: int,
    ) -> None:
        self.variant = variant
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._agreement = agreement
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queued_batches)
        self._sampled = SampledLog(
            log,
            lambda total, secs, counts: f"shadow: {total} more problems in the last {secs:.0f}s",
        )
        self._thread = threading.Thread(target=self._loop, name="stream-infer-shadow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(
        self,
        records: Sequence[SourceRecord],
        origins: Origins,
        parts: list[tuple[Rows, list[Any]]],
        primary: Variant,
    ) -> None:
        """Queue a batch for the shadow, or drop it when the shadow is behind (never blocks)."""
        if not parts:
            return
        item = _Item(records, origins, parts, primary.model.signature.outputs)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._metrics.shadow_batch("dropped")
            self._sampled.log("behind", "shadow is behind the primary: dropping batches for it")

    def stop(self, timeout: float) -> None:
        """Finish the batch in hand (queued ones are dropped), deliver for up to ``timeout``."""
        deadline = time.monotonic() + timeout
        if not self._thread.is_alive():  # never started (start-up failed), or already stopped
            self._producer.flush(0)
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=max(0.1, timeout))
        self._thread.join(max(0.1, deadline - time.monotonic()))
        left = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if left:
            log.warning("shadow: %d records not delivered at shutdown", left)
        self._sampled.flush()

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:  # idle: still serve delivery reports
                self._producer.poll(0)
                continue
            if item is None:
                return
            try:
                self._process(item)
            except Exception as exc:  # never let the shadow take the worker down
                self._metrics.shadow_batch("failed")
                self._sampled.log("error", "shadow failed on a batch: %s", exc)
            self._producer.poll(0)

    def _predict(self, feeds: dict[str, Any], rows: int) -> list[Any]:
        started = time.monotonic()
        try:
            return self.variant.model.predict(feeds)
        finally:
            v = self.variant
            self._metrics.timed("shadow", v.version, time.monotonic() - started)

    def _process(self, item: _Item) -> None:
        v = self.variant
        model, encoder = v.model, v.encoder
        predicted = failed = 0
        for rows, primary_outputs in item.parts:
            done, bad = infer_rows(rows, self._predict, encoder.misaligned, model.batchable)
            if bad and not model.healthy():
                raise InferenceError(f"the shadow fails on a known-good input too ({bad[0][1]})")
            failed += len(bad)
            if bad:
                self._sampled.log("rows", "shadow failed on %d rows alone: %s", len(bad), bad[0][1])
            for part, outputs in done:
                payloads = encoder.encode(item.records, part, outputs, item.origins)
                self._produce(part.index, payloads, item.origins)
                predicted += len(part.index)
                whole = len(part.index) == len(rows.index)
                start = 0 if whole else rows.index.index(part.index[0])
                end = start + len(part.index)
                theirs = [value[start:end] for value in primary_outputs]
                self._agreement.add(
                    compare_outputs(item.primary_outputs, theirs, model.signature.outputs, outputs)
                )
        self._metrics.answered("shadow", v.version, predicted, failed)
        self._metrics.shadow_batch("ok" if not failed else "failed")

    def _produce(self, index: Sequence[int], payloads: list[bytes], origins: Origins) -> None:
        keys = origins.keys
        msgs: list[dict[str, Any]] = [
            {"value": p, "key": keys[i]} for i, p in zip(index, payloads, strict=True)
        ]
        deadline = time.monotonic() + _QUEUE_FULL_WAIT_S
        while msgs:
            self._producer.produce_batch(self._topic, msgs, self._delivered)
            full = [
                m for m in msgs if "_error" in m and m["_error"].code() == KafkaError._QUEUE_FULL
            ]
            refused = sum(1 for m in msgs if "_error" in m) - len(full)
            if refused:
                self._metrics.shadow_record("failed", refused)
            if not full or time.monotonic() >= deadline:
                if full:
                    self._metrics.shadow_record("failed", len(full))
                return
            self._producer.poll(0.05)
            msgs = [{"value": m["value"], "key": m["key"]} for m in full]

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self._metrics.shadow_record("delivered")
            return
        self._metrics.shadow_record("failed")
        self._sampled.log(
            f"produce/{err.name()}",
            "shadow record to %s not delivered: %s", self._topic, kafka_error_text(err),
        )  # fmt: skip
