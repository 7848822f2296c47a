"""The inference stage: threads that run decoded batches through the model, then produce.

It runs beside the consuming thread so that the next batch is fetched and
decoded while this one is inferred (onnxruntime releases the GIL), and so the
consuming thread keeps polling Kafka however slow the model is: a slow batch
can never push the worker past ``max.poll.interval.ms``. The inference itself
(bisection of failing rows included) is ``inference.batch``, shared with the
Faust runtime; this room adds the threads, the health and metrics hooks, and
producing the outcome.

With ``lanes`` > 1 (``model.concurrent_batches``) that many batches are in the
model at once, sharing the session's thread pool (sized in ``inference.model``).
One call spread over every core waits, operator by operator, for its slowest
thread, and on a machine whose cores the broker client threads and the loop
also use, some thread is always late. Independent calls do not wait for each other. Outputs
still leave in the order the batches were consumed: each batch waits for its
turn before it produces, so per-partition order and the exactly-once gate are
as with one lane.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

from stream_infer.inference.batch import Outcome, Predict, infer_batch
from stream_infer.inference.canary import CanaryCounts, infer_with_canary
from stream_infer.inference.codec import Decoded
from stream_infer.inference.envelope import Encoder
from stream_infer.inference.model import Model
from stream_infer.inference.variants import Serving, Variant
from stream_infer.kafka.deliveries import Deliveries
from stream_infer.kafka.offsets import Batch
from stream_infer.logging import get_logger
from stream_infer.ops.modelops import ModelOpsMetrics
from stream_infer.runtimes.shadow import ShadowStage

__all__ = ["InferenceStage"]

log = get_logger("pipeline")


class _Item(NamedTuple):
    """A submitted batch: its turn, its records, their decoded rows, the variants to use."""

    turn: int
    batch: Batch
    decoded: Decoded
    serving: Serving


class _Answer(NamedTuple):
    """A batch through the model, waiting for its turn to produce."""

    outcome: Outcome
    primary: Variant
    canary: Variant | None
    counts: CanaryCounts | None


class InferenceStage:
    def __init__(
        self,
        model: Model,
        encoder: Encoder,
        deliveries: Deliveries,
        on_call: Callable[[float | None], None] = lambda started: None,
        on_result: Callable[[int, float], None] = lambda rows, seconds: None,
        on_predicted: Callable[[dict[str, Any], list[Any]], None] | None = None,
        gate: Callable[[Batch], AbstractContextManager[bool]] | None = None,
        on_produced: Callable[[Batch], None] = lambda batch: None,
        serving: Serving | None = None,
        shadow: ShadowStage | None = None,
        modelops: ModelOpsMetrics | None = None,
        lanes: int = 1,
    ) -> None:
        # What answers: read once per batch, so a hot reload switches between two batches.
        self.serving = serving or Serving(Variant("primary", "", "", model, encoder))
        self._shadow = shadow
        self._modelops = modelops
        self._deliveries = deliveries
        # Told when a model call starts (its monotonic start) and ends (None), then how
        # many rows it ran in how many seconds: health and metrics, off the hot path.
        self._on_call = on_call
        self._on_result = on_result
        self._on_predicted = on_predicted  # feeds and outputs of predicted rows (drift)
        # Held while a batch's outputs are produced: exactly once, the open transaction
        # (it says False for a batch whose transaction was aborted meanwhile).
        self._gate = gate or (lambda batch: nullcontext(True))
        self._on_produced = on_produced
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._submitted = 0  # written by the loop thread only; also the batch's turn
        self._finished = 0  # batches done (under _cond): the next turn is _finished + 1
        self._cond = threading.Condition()
        self._discard = False
        self._skipping = False  # a batch was skipped in its turn: so is every later one
        self.failure: BaseException | None = None
        self.lanes = max(1, lanes)
        self._calls: dict[int, float] = {}  # model calls running: thread -> monotonic start
        self._threads = [
            threading.Thread(
                target=self._loop,
                name="stream-infer-inference" + (f"-{i}" if self.lanes > 1 else ""),
                daemon=True,
            )
            for i in range(self.lanes)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, batch: Batch, decoded: Decoded) -> None:
        self._submitted += 1  # the loop thread's count: no lock on the hot path
        # The variant is chosen here, in consumption order, so that a hot reload switches
        # between two batches in that order whichever lane finishes first.
        live = self.serving  # replaced in place by a reload: what it holds now, for this batch
        now = Serving(live.primary, live.canary, live.router)
        self._queue.put(_Item(self._submitted, batch, decoded, now))

    @property
    def outstanding(self) -> int:
        """Batches submitted and not yet produced (waiting, in the model, or for their turn)."""
        return self._submitted - self._finished

    @property
    def waiting(self) -> int:
        """Batches beyond what the lanes can run at once: decoded and waiting for a lane."""
        return max(0, self.outstanding - self.lanes)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted batch has been produced (not yet acknowledged)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.outstanding == 0 or self.failure is not None, timeout
            )

    def discard_queued(self) -> None:
        """Skip batches not started yet: on shutdown they stay uncommitted and are redone."""
        self._discard = True

    def stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            turn, batch = item.turn, item.batch
            answer: _Answer | None = None
            try:
                if not self._discard and self.failure is None:
                    answer = self._infer(batch, item.decoded, item.serving)
            except BaseException as exc:  # the worker loop re-raises it on its own thread
                self._fail(exc)
            with self._cond:  # outputs leave in consumption order
                while self._finished + 1 != turn:
                    self._cond.wait()
                # Skipped (shutdown) or failed: so is everything after it, even a batch a
                # faster lane already inferred, or outputs would pass over a gap.
                self._skipping = self._skipping or answer is None
                deliver = not self._skipping and self.failure is None
            try:
                if deliver and answer is not None:
                    self._deliver(batch, answer)
            except BaseException as exc:
                self._fail(exc)
            finally:
                with self._cond:
                    self._finished += 1  # this batch's turn is over
                    self._cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        log.error("inference stage failed: %s", exc)
        if self.failure is None:  # the first one is the cause; later ones follow from it
            self.failure = exc

    def _infer(self, batch: Batch, decoded: Decoded, serving: Serving) -> _Answer:
        """The model's part, run by as many lanes at once as there are."""
        primary, canary = serving.primary, serving.canary  # the whole batch uses these
        keep = self._on_predicted is not None or self._shadow is not None
        if canary is None or serving.router is None:
            outcome = infer_batch(
                primary.model,
                primary.encoder,
                batch.records,
                decoded,
                self._timed(primary),
                keep_predicted=keep,
                origins=batch.origins,
            )
            return _Answer(outcome, primary, None, None)
        outcome, counts = infer_with_canary(
            primary, canary, serving.router, decoded, batch.origins, batch.records,
            self._timed(primary), self._timed(canary), keep_predicted=keep,
        )  # fmt: skip
        return _Answer(outcome, primary, canary, counts)

    def _deliver(self, batch: Batch, answer: _Answer) -> None:
        """Produce the whole batch's outputs in one go, in its turn.

        Producing happens under the gate and all at once, so that a transaction
        holds either every output of a batch or none of it; the model's time is
        spent outside it.
        """
        outcome, primary, canary, counts = answer
        by_canary = 0
        if canary is not None and counts is not None:
            by_canary = counts.answered
            if self._modelops is not None:
                self._modelops.answered("canary", canary.version, counts.answered, counts.fell_back)
        if self._modelops is not None:
            predicted = sum(len(index) for index, _ in outcome.predictions) - by_canary
            self._modelops.answered("primary", primary.version, predicted, len(outcome.failures))
        if self._on_predicted is not None:
            for feeds, outputs in outcome.predicted:
                self._on_predicted(feeds, outputs)
        deliveries = self._deliveries
        with self._gate(batch) as current:
            if not current:
                return  # its transaction was aborted: the batch will be consumed again
            deliveries.model_version = primary.version  # dlq.model.version of this batch
            for i, reject in outcome.rejects:
                deliveries.dead_letter(batch, i, reject.stage, reject)
            for index, payloads in outcome.predictions:
                deliveries.predictions_for(batch, index, payloads)
            if outcome.failures:
                log.warning(
                    "%d of %d rows failed inference on their own",
                    len(outcome.failures), len(batch.records),
                )  # fmt: skip
            for i, exc in outcome.failures:
                deliveries.dead_letter(batch, i, "inference", exc)
            batch.produced_at = time.monotonic()
            self._on_produced(batch)
        shadow = self._shadow
        if shadow is not None:  # after the batch's own outputs: the shadow never delays them
            done = outcome.predicted
            parts = [(rows, out) for rows, (_, out) in zip(outcome.parts, done, strict=True)]
            shadow.offer(batch.records, batch.origins, parts, primary)

    def _timed(self, variant: Variant) -> Predict:
        """``variant``'s predict, timed for health, capacity and the per-version histogram."""
        predict, on_call, on_result = variant.model.predict, self._on_call, self._on_result
        modelops, role, version = self._modelops, variant.role, variant.version

        calls, lock = self._calls, self._cond

        def timed(feeds: dict[str, Any], rows: int) -> list[Any]:
            started = time.monotonic()
            me = threading.get_ident()
            with lock:  # health watches the oldest call still running
                calls[me] = started
                on_call(min(calls.values()))
            try:
                return predict(feeds)
            finally:
                with lock:
                    del calls[me]
                    on_call(min(calls.values()) if calls else None)
                seconds = time.monotonic() - started
                on_result(rows, seconds)
                if modelops is not None:
                    modelops.timed(role, version, seconds)

        return timed
