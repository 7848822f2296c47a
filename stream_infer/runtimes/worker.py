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

from stream_infer.config import Settings
from stream_infer.errors import KafkaClientError
from stream_infer.inference.codec import Decoder
from stream_infer.inference.model import Model, load_model
from stream_infer.kafka.batcher import BatchSizer, MicroBatcher
from stream_infer.kafka.commits import make_committer
from stream_infer.kafka.consumer import InputConsumer, check_topics
from stream_infer.kafka.deliveries import Deliveries
from stream_infer.kafka.offsets import Batch, OffsetTracker, TopicPartition
from stream_infer.kafka.producer import OutputProducer
from stream_infer.kafka.transactions import transactional_id
from stream_infer.logging import get_logger
from stream_infer.ops.telemetry import Telemetry
from stream_infer.runtimes.backpressure import Backpressure
from stream_infer.runtimes.common import announce
from stream_infer.runtimes.modelops import ModelOps
from stream_infer.runtimes.pipeline import InferenceStage

__all__ = ["Worker", "WorkerStats"]

log = get_logger("worker")

_COMMIT_RETRY_S = 5.0  # how long a commit on revoke is retried on transient errors
_STUCK_S = 60.0  # a batch unacknowledged this long gets a warning


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


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
        self.settings = settings
        self.model = model
        self._stop = threading.Event()
        self._stop_deadline = float("inf")  # set by stop(): shutdown must end by then
        self._rebalance_seen = 0
        self._stuck_warned = 0
        self._closing = False
        self._seq = 0
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
            self.model = load_model(s.model, s.batching.max_batch_size, concurrent=True)
        model = self.model
        tel.model_loaded(lambda: model.provider)
        shadow_topic = [s.model.shadow.topic] if s.model.shadow else []
        check_topics(
            s.kafka.admin_config(),
            {
                "topics.inputs": s.topics.inputs,
                "topics.output": [s.topics.output],
                "topics.dead_letter": [s.topics.dead_letter],
                "model.shadow.topic": shadow_topic,
            },
            timeout=60.0,
        )
        p = s.processing
        client_id = f"stream-infer-{p.worker_id}"
        self._ops = ops = ModelOps(s, model, tel, client_id, on_switch=self._switched)
        eos = p.exactly_once
        txn_id = transactional_id(s.kafka.group_id, p.worker_id) if eos else None
        self._producer = OutputProducer(s.kafka.producer_config(client_id, txn_id))
        self._deliveries = Deliveries(
            self._producer,
            s.topics.output,
            s.topics.dead_letter,
            s.kafka.group_id,
            ops.serving.primary.version,
            p.worker_id,
            stage_counts=tel.metrics.dead_letters,
            on_batch_done=lambda batch: tel.batch_acknowledged(batch.origins.timestamps),
            transactional=eos,
        )
        self._consumer = InputConsumer(
            s.kafka.consumer_config(client_id, p.static_id),
            self._assigned,
            self._revoked,
            self._lost,
        )
        self._committer = make_committer(
            s, self._producer, self._deliveries, self._consumer, self.tracker, self._stop.is_set
        )
        primary = ops.serving.primary
        self._stage = InferenceStage(
            model,
            primary.encoder,
            self._deliveries,
            on_call=tel.inference_call,
            on_result=self._inference_result,
            on_predicted=ops.observe if ops.drift is not None else None,
            gate=self._committer.gate,
            on_produced=self._committer.produced,
            serving=ops.serving,
            shadow=ops.shadow,
            modelops=ops.metrics,
            lanes=model.lanes,
        )
        self._stage.start()
        ops.start()
        self._decoder = Decoder(model.signature)
        self._backpressure = Backpressure(
            p,
            self._consumer,
            self.tracker.in_flight,
            lambda: self._stage.waiting,
            self._progress,
            self._stop.is_set,
        )
        self._instrument()
        self._consumer.subscribe(s.topics.inputs)
        self._sizer = BatchSizer(s.batching.max_batch_size, _seconds(s.batching.latency_target_ms))
        self._batcher = MicroBatcher(
            self._timed_consume,
            s.batching.max_batch_size,
            s.batching.max_wait_ms,
            self._stop.is_set,
            self._consumer,
        )
        announce(s, primary.version, model.provider, tel.url)

    def _switched(self, model: Model) -> None:
        """A hot reload switched the primary (reload thread): what the worker reports follows."""
        self.model = model

    def _inference_result(self, rows: int, seconds: float) -> None:
        """A model call ended (inference thread): metrics, capacity, the adaptive batch size."""
        self.telemetry.inference_result(rows, seconds, self._stage.lanes)
        self._sizer.observe(rows, seconds)

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
                self._committer.check()
                self._raise_fatal()
                self._batcher.max_size = self._sizer.size
                msgs = self._batcher.next_batch()
                if msgs:
                    self._submit(msgs)
                self._progress(0.0)
                self._backpressure.apply()
                self.stats.pauses = self._backpressure.pauses
                self.stats.peak_in_flight = self._backpressure.peak_in_flight
                self._warn_if_stuck()
            self._raise_fatal()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._shutdown(failure)

    def _progress(self, timeout: float, urgent: bool = False) -> None:
        """Serve acknowledgements (waiting up to ``timeout``), then commit if one is due.

        ``urgent``: the pipeline is full. Exactly once, batches stay in flight
        until their transaction commits, so a full pipeline ends the transaction
        early rather than pausing: measured with 1 s transactions, waiting for
        the interval capped the worker at 64 batches a second (28k events/s).
        """
        self._deliveries.serve(timeout)
        self._committer.check()
        self._committer.due(urgent)
        self._raise_fatal()

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
        self._committer.consumed(batch)
        self.tracker.open(batch)
        inputs = self.settings.topics.inputs
        self.telemetry.consumed(
            {inputs[0]: len(msgs)} if len(inputs) == 1 else Counter(m.topic() for m in msgs),
            len(msgs),
        )
        # Rejects are dead-lettered by the inference stage, with the batch's predictions:
        # a batch's outputs are produced together (exactly once: in one transaction).
        self._stage.submit(batch, self._decoder.decode([m.value() for m in msgs]))

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

    # -- rebalance hooks (called inside consume, on this thread) --------------

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self.stats.assigned += len(partitions)
        self.tracker.assign(partitions)
        self.telemetry.health.joined = True
        self.ready.set()

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        """Finish in-flight work and commit it before the partitions go (no duplicates)."""
        self.stats.revoked += len(partitions)
        if not self._closing:
            self._drain(self._time_left(self.settings.processing.shutdown_timeout_s))
        self._committer.commit_now(partitions, self._time_left(_COMMIT_RETRY_S))
        self._committer.forget(partitions)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        self.stats.lost += len(partitions)
        self._committer.forget(partitions, lost=True)

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
            try:
                self._deliveries.flush(max(0.0, min(1.0, deadline - time.monotonic() - 3.0)))
            except Exception as exc:  # a fatal producer raises here: keep the first reason
                log.warning("flush after the error failed: %s", exc)
        self._stage.discard_queued()
        self._closing = True

        def leave() -> None:
            # Keep a second for the group leave itself.
            try:
                self._committer.commit_now(None, max(0.0, deadline - time.monotonic() - 1.0))
            except Exception as exc:  # never let cleanup hide the reason we are stopping
                log.warning("final commit failed: %s", exc)
            try:
                self._consumer.close()  # its revoke commits too, and may fail the same way
            except Exception as exc:
                log.warning("leaving the group failed: %s", exc)

        closer = threading.Thread(target=leave, name="stream-infer-close", daemon=True)
        closer.start()
        closer.join(max(0.5, deadline - time.monotonic()))
        if closer.is_alive():
            log.warning("commit and group leave did not finish in time; the group will time us out")
        self._stage.stop(1.0)
        self._ops.stop(max(0.1, min(2.0, deadline - time.monotonic())))
        try:
            self._deliveries.flush(max(0.0, min(1.0, deadline - time.monotonic())))
        except Exception as exc:  # never let cleanup hide the reason we are stopping
            log.warning("final flush failed: %s", exc)
        self._deliveries.dead_letter_log.flush()  # the last window's summary line
        self.telemetry.close(min(5.0, deadline - time.monotonic()))
        log.info("stopped in %.1fs", time.monotonic() - started)
