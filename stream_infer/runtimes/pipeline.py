"""The inference stage: a thread that runs decoded batches through the model, then produces.

It runs beside the consuming thread so that the next batch is fetched and
decoded while this one is inferred (onnxruntime releases the GIL), and so the
consuming thread keeps polling Kafka however slow the model is: a slow batch
can never push the worker past ``max.poll.interval.ms``. The inference itself
(bisection of failing rows included) is ``inference.batch``, shared with the
Faust runtime; this room adds the thread, the health and metrics hooks, and
producing the outcome.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from stream_infer.inference.batch import infer_batch
from stream_infer.inference.codec import Decoded
from stream_infer.inference.envelope import Encoder
from stream_infer.inference.model import Model
from stream_infer.kafka.deliveries import Deliveries
from stream_infer.kafka.offsets import Batch
from stream_infer.logging import get_logger

__all__ = ["InferenceStage"]

log = get_logger("pipeline")


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
    ) -> None:
        self._model = model
        self._encoder = encoder
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
        self._queue: queue.SimpleQueue[tuple[Batch, Decoded] | None] = queue.SimpleQueue()
        self._submitted = 0  # written by the loop thread only
        self._finished = 0  # written by this stage's thread only
        self._cond = threading.Condition()
        self._discard = False
        self.failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._loop, name="stream-infer-inference", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: Batch, decoded: Decoded) -> None:
        self._submitted += 1  # the loop thread's count: no lock on the hot path
        self._queue.put((batch, decoded))

    @property
    def outstanding(self) -> int:
        """Batches submitted and not yet through the model (queued or running)."""
        return self._submitted - self._finished

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
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, decoded = item
            try:
                if not self._discard and self.failure is None:
                    self._process(batch, decoded)
            except BaseException as exc:  # the worker loop re-raises it on its own thread
                log.error("inference stage failed: %s", exc)
                self.failure = exc
            finally:
                with self._cond:
                    self._finished += 1  # this thread's count
                    self._cond.notify_all()

    def _process(self, batch: Batch, decoded: Decoded) -> None:
        """Infer and encode first, then produce the whole batch's outputs in one go.

        Producing happens under the gate and all at once, so that a transaction
        holds either every output of a batch or none of it; the model's time is
        spent outside it.
        """
        outcome = infer_batch(
            self._model,
            self._encoder,
            batch.records,
            decoded,
            self._timed_predict,
            keep_predicted=self._on_predicted is not None,
            origins=batch.origins,
        )
        if self._on_predicted is not None:
            for feeds, outputs in outcome.predicted:
                self._on_predicted(feeds, outputs)
        deliveries = self._deliveries
        with self._gate(batch) as current:
            if not current:
                return  # its transaction was aborted: the batch will be consumed again
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

    def _timed_predict(self, feeds: dict[str, Any], rows: int) -> list[Any]:
        started = time.monotonic()
        self._on_call(started)
        try:
            return self._model.predict(feeds)
        finally:
            self._on_call(None)
            self._on_result(rows, time.monotonic() - started)
