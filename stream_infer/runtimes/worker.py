"""The worker loop: consume, decode, hand to inference, serve acknowledgements, commit.

The loop is the only thread that touches the consumer, and the only one that
serves delivery reports, so the offset books need no lock. Inference runs on
its own thread (see ``pipeline``). Committing is at-least-once: a partition's
offset moves only past rows whose every output the broker acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from stream_infer.config import Settings
from stream_infer.errors import CommitError, ConfigError, KafkaClientError
from stream_infer.inference.codec import Decoder
from stream_infer.inference.drift import DriftMonitor, load_baseline
from stream_infer.inference.envelope import Encoder
from stream_infer.inference.model import Model, load_model
from stream_infer.kafka.batcher import MicroBatcher
from stream_infer.kafka.consumer import InputConsumer, check_topics
from stream_infer.kafka.offsets import Batch, OffsetTracker, TopicPartition
from stream_infer.kafka.producer import Deliveries, OutputProducer
from stream_infer.logging import get_logger
from stream_infer.ops.telemetry import Telemetry
from stream_infer.runtimes.pipeline import InferenceStage

__all__ = ["Worker", "WorkerStats"]

log = get_logger("worker")

_TRANSIENT_COMMIT = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT, KafkaError._WAIT_COORD,
}  # fmt: skip

_HOLD_S = 1.0  # how long a full pipeline is waited out before the partitions are paused
_COMMIT_RETRY_S = 5.0  # how long a synchronous commit is retried on transient errors
_STUCK_S = 60.0  # a batch unacknowledged this long gets a warning


def _transient_commit_error(exc: BaseException) -> bool:
    err = getattr(exc, "error", None)
    return (
        isinstance(exc, CommitError)
        and err is not None
        and (err.retriable() or err.code() in _TRANSIENT_COMMIT)
    )


@dataclass
class WorkerStats:
    """Counters of the loop's own decisions (the metrics server reads these too)."""

    batches: int = 0
    pauses: int = 0
    peak_in_flight: int = 0
    assigned: int = 0
    revoked: int = 0
    lost: int = 0


class Worker:
    """One consumer-group member. ``run()`` blocks until ``stop()`` or a fatal error."""

    def __init__(self, settings: Settings, model: Model | None = None) -> None:
        if settings.processing.guarantee == "exactly_once":
            raise ConfigError("processing.guarantee: exactly_once is not implemented yet")
        self.settings = settings
        self.model = model
        self._stop = threading.Event()
        self._stop_deadline = float("inf")  # set by stop(): shutdown must end by then
        self._rebalance_seen = 0
        self._stuck_warned = 0
        self._closing = False
        self._seq = 0
        self._last_commit = 0.0
        self.tracker = OffsetTracker()
        self.stats = WorkerStats()
        self.ready = threading.Event()  # model loaded and group joined
        self.telemetry = Telemetry(settings)

    def counts(self) -> tuple[int, int]:
        """Acknowledged predictions and dead letters so far."""
        deliveries = getattr(self, "_deliveries", None)
        if deliveries is None:
            return 0, 0
        return deliveries.acked_predictions, deliveries.acked_dead_letters

    def stop(self) -> None:
        """Ask for a graceful stop: finish the batch in hand, commit, leave the group."""
        if not self._stop.is_set():
            self._stop_deadline = time.monotonic() + self.settings.processing.shutdown_timeout_s
        self._stop.set()

    # -- start-up ------------------------------------------------------------

    def _start(self) -> None:
        s, tel = self.settings, self.telemetry
        if self.model is None:
            self.model = load_model(s.model, s.batching.max_batch_size)
        model = self.model
        tel.model_loaded(lambda: model.provider)
        check_topics(
            s.kafka.admin_config(),
            {
                "topics.inputs": s.topics.inputs,
                "topics.output": [s.topics.output],
                "topics.dead_letter": [s.topics.dead_letter],
            },
            timeout=60.0,
        )
        client_id = f"stream-infer-{s.processing.worker_id}"
        self._producer = OutputProducer(s.kafka.producer_config(client_id))
        self._deliveries = Deliveries(
            self._producer,
            s.topics.output,
            s.topics.dead_letter,
            s.kafka.group_id,
            s.model.version,
            s.processing.worker_id,
            stage_counts=tel.metrics.dead_letters,
            on_batch_done=lambda batch: tel.batch_acknowledged(batch.records),
        )
        encoder = Encoder(s.model.name, s.model.version, model.signature.outputs)
        drift = None
        if s.drift.baseline:
            drift = DriftMonitor(load_baseline(s.drift.baseline, model), s.drift.window_s)
            tel.watch_drift(drift)
        self._stage = InferenceStage(
            model,
            encoder,
            self._deliveries,
            on_call=tel.inference_call,
            on_result=tel.inference_result,
            on_predicted=drift.observe if drift is not None else None,
        )
        self._stage.start()
        self._decoder = Decoder(model.signature)
        self._consumer = InputConsumer(
            s.kafka.consumer_config(client_id, s.processing.static_id),
            self._assigned,
            self._revoked,
            self._lost,
        )
        self._instrument()
        self._consumer.subscribe(s.topics.inputs)
        self._batcher = MicroBatcher(
            self._timed_consume,
            s.batching.max_batch_size,
            s.batching.max_wait_ms,
            self._stop.is_set,
            self._consumer,
        )
        log.info(
            "worker %s: %s -> %s (dead letters: %s), group %s, model %s v%s on %s, "
            "batches of <= %d rows / %d ms, %s",
            s.processing.worker_id,
            ",".join(s.topics.inputs),
            s.topics.output,
            s.topics.dead_letter,
            s.kafka.group_id,
            s.model.name,
            s.model.version,
            model.provider,
            s.batching.max_batch_size,
            s.batching.max_wait_ms,
            s.processing.guarantee,
        )
        log.info("metrics on %s (and /healthz, /readyz)", tel.url)
        if s.processing.static_id:
            log.info(
                "static group membership as '%s': a restart under this id resumes its "
                "partitions at once; never run two workers with the same id",
                s.processing.static_id,
            )

    def _instrument(self) -> None:
        """Point metrics and health at the live state (read when scraped)."""
        tel, stats = self.telemetry, self.stats
        metrics = tel.metrics
        metrics.predictions = lambda: self._deliveries.acked_predictions
        metrics.assigned = lambda: len(self.tracker.owned)
        metrics.paused = lambda: self._consumer.paused
        metrics.in_flight = lambda: len(self.tracker.open_batches())
        metrics.rebalances = lambda: {
            "assigned": stats.assigned, "revoked": stats.revoked, "lost": stats.lost
        }  # fmt: skip
        tel.health.oldest_unacked = self._oldest_unacked
        tel.watch()

    def _oldest_unacked(self) -> float | None:
        """When the oldest batch whose outputs all went out, but are not all acknowledged, did."""
        oldest = self.tracker.oldest()
        if oldest is None or oldest.done:
            return None
        return oldest.produced_at

    def _timed_consume(self, n: int, timeout: float) -> list[Any]:
        """Consume, telling capacity apart from idleness: a short answer means we waited."""
        started = time.monotonic()
        msgs = self._consumer.consume(n, timeout)
        if len(msgs) < n and not self._consumer.paused:
            self.telemetry.waited(time.monotonic() - started)
        return msgs

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        self.telemetry.serve()
        try:
            self._start()
        except BaseException:
            self.telemetry.close()
            raise
        failure: BaseException | None = None
        turned = self.telemetry.health.turned
        try:
            while not self._stop.is_set():
                turned()
                self._raise_fatal()
                msgs = self._batcher.next_batch()
                if msgs:
                    self._submit(msgs)
                self._deliveries.serve()
                self._backpressure()
                self._warn_if_stuck()
                self._commit_due()
            self._raise_fatal()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._shutdown(failure)

    def _raise_fatal(self) -> None:
        for source in (
            self._stage.failure,
            self._deliveries.fatal,
            self._producer.fatal,
            self._consumer.fatal,
        ):
            if source is not None:
                err = getattr(source, "error", None)
                fenced = err is not None and (
                    err.code() == KafkaError.FENCED_INSTANCE_ID or "group.instance.id" in str(err)
                )
                if fenced:
                    raise KafkaClientError(
                        f"another worker joined the group with processing.worker_id "
                        f"'{self.settings.processing.worker_id}'; two live workers must never "
                        "share an id",
                        err,
                    )
                raise source

    def _submit(self, msgs: list[Any]) -> None:
        serial = self._consumer.rebalances()
        if serial != self._rebalance_seen:
            # Just after a rebalance: records of partitions we no longer own would
            # only be predicted twice (their next owner redoes them); skip them.
            self._rebalance_seen = serial
            owned = self.tracker.owned
            msgs = [m for m in msgs if (m.topic(), m.partition()) in owned]
            if not msgs:
                return
        self._seq += 1
        self.stats.batches += 1
        batch = Batch(self._seq, msgs)
        self.tracker.open(batch)
        inputs = self.settings.topics.inputs
        self.telemetry.consumed(
            {inputs[0]: len(msgs)} if len(inputs) == 1 else Counter(m.topic() for m in msgs),
            len(msgs),
        )
        decoded = self._decoder.decode([m.value() for m in msgs])
        for i, exc in decoded.rejects:
            self._deliveries.dead_letter(batch, i, exc.stage, exc)
        if decoded.groups:
            self._stage.submit(batch, decoded)
        else:
            batch.produced_at = time.monotonic()

    def _warn_if_stuck(self) -> None:
        """Say so when a batch waits for acknowledgements for long: its partition is stalled."""
        oldest = self.tracker.oldest()
        if oldest is None or oldest.seq <= self._stuck_warned:
            return
        waited = time.monotonic() - oldest.born
        if waited >= _STUCK_S:
            self._stuck_warned = oldest.seq
            log.warning(
                "batch %d has waited %.0fs for %d acknowledgements; its partitions cannot commit "
                "past it (broker unreachable? see the errors above)",
                oldest.seq, waited, oldest.pending,
            )  # fmt: skip

    def _full(self) -> bool:
        p = self.settings.processing
        in_flight = self.tracker.in_flight()
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, in_flight)
        return (
            in_flight >= p.max_in_flight_batches or self._stage.outstanding >= p.max_queued_batches
        )

    def _backpressure(self) -> None:
        """Hold off reading while the pipeline is full; pause only if that lasts.

        A pause is not free: librdkafka drops its prefetch and fetches again on
        resume (measured: a few hundred ms each time on the local broker). So a
        short stall is waited out here, serving acknowledgements, and only a
        stall longer than ``_HOLD_S`` (a slow model) pauses the partitions, after
        which the loop keeps polling so the group keeps us.
        """
        p = self.settings.processing
        consumer = self._consumer
        if consumer.paused:
            if (
                self.tracker.in_flight() <= p.max_in_flight_batches // 2
                and self._stage.outstanding <= p.max_queued_batches // 2
            ):
                consumer.resume()
            else:
                self._deliveries.serve(0.05)  # wait for progress, not in a busy loop
            return
        if not self._full():
            return
        deadline = time.monotonic() + _HOLD_S
        while self._full():
            if time.monotonic() >= deadline or self._stop.is_set():
                log.debug("pipeline still full after %.1fs: pausing consumption", _HOLD_S)
                self.stats.pauses += 1
                consumer.pause()
                return
            self._deliveries.serve(0.005)
            self._raise_fatal()

    def _commit_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if (
            not force
            and (now - self._last_commit) * 1000 < self.settings.processing.commit_interval_ms
        ):
            return
        self._last_commit = now
        consumer, tracker = self._consumer, self.tracker
        while consumer.commit_failures:
            tracker.failed(consumer.commit_failures.pop()[0])
        offsets = tracker.to_commit()
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except CommitError as exc:
            log.warning("%s (will retry)", exc)
            return
        tracker.sent(offsets)

    # -- rebalance hooks (called inside consume, on this thread) --------------

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self.stats.assigned += len(partitions)
        self.tracker.assign(partitions)
        self.telemetry.health.joined = True
        self.ready.set()

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self.stats.revoked += len(partitions)
        if not self._closing:
            self._drain(self._time_left(self.settings.processing.shutdown_timeout_s))
        self._commit_sync(partitions)
        self.tracker.forget(partitions)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        self.stats.lost += len(partitions)
        self.tracker.forget(partitions)

    def _drain(self, timeout: float) -> bool:
        """Let submitted batches finish and their outputs be acknowledged; True if all did.

        Delivery reports are served while inference finishes, so neither side
        waits on the other.
        """
        deadline = time.monotonic() + timeout
        stage, deliveries = self._stage, self._deliveries
        turned = self.telemetry.health.turned
        while not stage.wait_idle(0.05):
            turned()  # waiting on inference inside a rebalance is progress, not a stall
            deliveries.serve()
            if time.monotonic() >= deadline:
                log.warning("inference still busy after %.0fs; committing what is done", timeout)
                return False
        left = deliveries.flush(max(0.0, deadline - time.monotonic()))
        if left:
            log.warning("%d outputs still unacknowledged; their inputs stay uncommitted", left)
        return left == 0

    def _time_left(self, budget: float) -> float:
        """``budget`` seconds, cut short by the shutdown deadline once a stop was asked for."""
        return max(0.0, min(budget, self._stop_deadline - time.monotonic()))

    def _commit_sync(
        self, partitions: list[TopicPartition] | None = None, within: float = _COMMIT_RETRY_S
    ) -> None:
        """Commit now (rebalance, shutdown), retrying transient failures for ``within`` s."""
        offsets = self.tracker.to_commit(partitions)
        if not offsets:
            return
        try:
            for attempt in Retrying(
                retry=retry_if_exception(_transient_commit_error),
                wait=wait_exponential(multiplier=0.1, max=1.0),
                stop=stop_after_delay(self._time_left(within)),
                reraise=True,
            ):
                with attempt:
                    self._consumer.commit(offsets, sync=True)
        except CommitError as exc:
            log.warning("%s; the next owner may redo some work", exc)
            return
        self.tracker.sent(offsets)
        log.info(
            "committed %s", ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(offsets.items()))
        )

    # -- shutdown --------------------------------------------------------------

    def _shutdown(self, failure: BaseException | None) -> None:
        """Finish what was submitted (clean stop only), commit, leave: all before the deadline.

        The deadline runs from the stop request (SIGTERM), not from here, so a
        rebalance that was under way when it came counts against the same
        budget. Batches still queued when time runs out are skipped; they stay
        uncommitted and the partition's next owner redoes them. The final
        commit and the group leave run on a helper thread, so a broker that
        does not answer cannot hold the process past the deadline.
        """
        started = time.monotonic()
        self.telemetry.health.stopping = True
        budget = self.settings.processing.shutdown_timeout_s
        self._stop_deadline = min(self._stop_deadline, started + budget)
        deadline = self._stop_deadline
        log.info("stopping%s", f" after error: {failure}" if failure else "")
        if failure is None:
            self._drain(max(0.0, deadline - time.monotonic() - 3.0))
        else:  # acknowledgements already on their way still earn commits
            self._deliveries.flush(max(0.0, min(1.0, deadline - time.monotonic() - 3.0)))
        self._stage.discard_queued()
        self._closing = True

        def leave() -> None:
            # Keep a second for the group leave itself.
            self._commit_sync(within=max(0.0, deadline - time.monotonic() - 1.0))
            self._consumer.close()

        closer = threading.Thread(target=leave, name="stream-infer-close", daemon=True)
        closer.start()
        closer.join(max(0.5, deadline - time.monotonic()))
        if closer.is_alive():
            log.warning("commit and group leave did not finish in time; the group will time us out")
        self._stage.stop(1.0)
        try:
            self._deliveries.flush(max(0.0, min(1.0, deadline - time.monotonic())))
        except Exception as exc:  # never let cleanup hide the reason we are stopping
            log.warning("final flush failed: %s", exc)
        self._deliveries.dead_letter_log.flush()  # the last window's summary line
        self.telemetry.close(min(5.0, deadline - time.monotonic()))
        log.info("stopped in %.1fs", time.monotonic() - started)
