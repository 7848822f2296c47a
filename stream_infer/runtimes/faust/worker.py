"""``stream-infer run --runtime faust``: the pipeline as the agent of a Faust app.

The agent takes up to ``batching.max_batch_size`` events within
``batching.max_wait_ms`` with ``noack_take`` (so Faust acknowledges nothing on
its own), runs them through :class:`Pipeline` on the inference thread, and
hands the results to the producer. It does not wait for delivery: each batch
gets a task that waits for its records to be acknowledged by the broker, then
for the batch before it, and only then acknowledges its events to Faust.
Acknowledgements therefore follow consumption order, which Faust's committer
needs: it commits the offset after the first gap-free run of acknowledged
offsets, and it only checks the gap against its last commit, so an event
acknowledged ahead of an earlier one could be committed past it.

Faust commits acknowledged offsets every ``processing.commit_interval_ms``, on
rebalances (after waiting for every event taken to be acknowledged) and when it
stops. A graceful stop (``stop()``: SIGTERM) fetches nothing more, lets the
events already taken be processed, delivered and acknowledged, commits and
leaves the group, all within ``processing.shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import faust

from stream_infer.config import Settings
from stream_infer.errors import StreamInferError
from stream_infer.inference.drift import DriftMonitor, load_baseline
from stream_infer.inference.model import Model, load_model
from stream_infer.kafka.consumer import check_topics
from stream_infer.logging import LOGGER_NAME, get_logger
from stream_infer.ops.telemetry import Telemetry
from stream_infer.runtimes.common import announce
from stream_infer.runtimes.faust.options import app_settings, make_app
from stream_infer.runtimes.faust.outbox import FaustBatch, Outbox
from stream_infer.runtimes.faust.pipeline import FaustRecord, Pipeline
from stream_infer.runtimes.worker import WorkerStats

__all__ = ["FaustWorker"]

log = get_logger("faust")

_OVERRUN_S = 5.0


class _Runner(faust.Worker):
    """Faust's worker service, quiet, with our logging and our signal handling."""

    logger = logging.getLogger("faust.worker")

    def __init__(self, app: faust.App, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(app, loop=loop, quiet=True, redirect_stdouts=False, override_logging=False)
        self.spinner = None

    def install_signal_handlers(self) -> None:
        """None: the CLI's handlers call ``FaustWorker.stop``, which knows the deadline."""


class FaustWorker:
    """One consumer-group member in a Faust app. ``run()`` blocks until stopped or failed."""

    def __init__(
        self,
        settings: Settings,
        model: Model | None = None,
        inline: bool = False,
        exit_on_overrun: bool = False,
    ) -> None:
        self.settings = settings
        self.model = model
        self._inline = inline  # inference on the event loop itself: for measurements only
        # The CLI's process ends itself if Faust overruns the shutdown deadline by 5 s
        # (a client that cannot reach the broker can hold a service's stop for good).
        self._exit_on_overrun = exit_on_overrun
        self.telemetry = Telemetry(settings)
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.acked_predictions = 0
        self.acked_dead_letters = 0
        self.stats = WorkerStats()  # the native worker's counters, where they apply
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: _Runner | None = None
        self._stopping = False
        self._stop_deadline = float("inf")
        self._stopped: asyncio.Task[None] | None = None
        self._inflight: deque[tuple[FaustBatch, asyncio.Task[None]]] = deque()
        self._idle_since: float | None = None
        self._temp_dir: Path | None = None

    def counts(self) -> tuple[int, int]:
        """Acknowledged predictions and dead letters so far."""
        return self.acked_predictions, self.acked_dead_letters

    def stop(self) -> None:
        """Ask for a graceful stop (thread- and signal-safe)."""
        if not self._stopping:
            self._stop_deadline = time.monotonic() + self.settings.processing.shutdown_timeout_s
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._begin_stop)
        else:
            self._stopping = True

    # -- start-up ------------------------------------------------------------------

    def run(self) -> None:
        # A setting Faust cannot take stops us before any port, model or connection.
        app_settings(self.settings, Path(self.settings.faust.data_dir or "."))
        self.telemetry.serve()
        try:
            self._start()
        except BaseException:
            self.telemetry.close()
            raise
        try:
            self._run_app()
        finally:
            self.pipeline.close()
            self.telemetry.close(min(5.0, max(0.1, self._stop_deadline - time.monotonic())))
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
        if self.failure is not None:
            raise self.failure

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
        drift = None
        if s.drift.baseline:
            drift = DriftMonitor(load_baseline(s.drift.baseline, model), s.drift.window_s)
            tel.watch_drift(drift)
        self.pipeline = Pipeline(
            s,
            model,
            inline=self._inline,
            on_call=tel.inference_call,
            on_result=tel.inference_result,
            on_predicted=drift.observe if drift is not None else None,
        )

    def _build(self, loop: asyncio.AbstractEventLoop) -> faust.App:
        s, tel = self.settings, self.telemetry
        data_dir = None
        if not s.faust.data_dir:
            import tempfile

            data_dir = self._temp_dir = Path(tempfile.mkdtemp(prefix="stream-infer-faust-"))
        app = make_app(s, data_dir)
        topic = app.topic(
            *s.topics.inputs,
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        )  # fmt: skip
        app.agent(topic, name="stream-infer", concurrency=1)(self._agent)
        app.timer(1.0)(self._tick)
        app.on_partitions_assigned.connect(self._assigned)
        app.on_partitions_revoked.connect(self._revoked)
        self.outbox = Outbox(app.producer, s, self.pipeline, tel.metrics.dead_letters)
        metrics = tel.metrics
        inputs = set(s.topics.inputs)
        metrics.predictions = lambda: self.acked_predictions
        metrics.assigned = lambda: sum(1 for tp in app.consumer.assignment() if tp.topic in inputs)
        metrics.in_flight = lambda: len(self._inflight)
        metrics.rebalances = lambda: {
            "assigned": self.stats.assigned, "revoked": self.stats.revoked, "lost": 0
        }  # fmt: skip
        tel.health.oldest_unacked = self._oldest_unacked
        tel.watch()
        announce(
            s, self.pipeline.version, self.pipeline.model.provider, tel.url,
            f"faust {faust.__version__}",
        )  # fmt: skip
        return app

    def _route_library_logs(self) -> None:
        """Faust's, mode's and aiokafka's warnings through our handler; their chatter off."""
        ours = logging.getLogger(LOGGER_NAME)
        if not ours.handlers:
            return  # logging is not configured (a library caller, a test): leave theirs alone
        level = logging.DEBUG if self.settings.logging.level == "DEBUG" else logging.WARNING
        for name in ("faust", "mode", "aiokafka"):
            lib = logging.getLogger(name)
            lib.handlers = list(ours.handlers)
            lib.setLevel(level)
            lib.propagate = False

    def _run_app(self) -> None:
        self._route_library_logs()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        runner = self._runner = _Runner(self._build(loop), loop)
        if self._stopping:  # asked before the loop existed
            loop.call_soon(self._begin_stop)
        try:
            loop.run_until_complete(runner.start())
            if self._stopped is not None:
                loop.run_until_complete(self._stopped)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self._fail(exc)
        finally:
            try:
                runner.stop_and_shutdown()
            except Exception as exc:  # Faust re-raises the reason it crashed for
                self._fail(exc)
            asyncio.set_event_loop(None)

    # -- the agent -----------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        b = self.settings.batching
        async for events in stream.noack_take(b.max_batch_size, within=b.max_wait_ms / 1000.0):
            self.telemetry.health.turned()
            if self.failure is not None:
                continue  # never acknowledged past a failure: the next owner redoes them
            try:
                await self._handle(stream, events)
            except Exception as exc:
                self._fail(exc)

    async def _handle(self, stream: Any, events: list[Any]) -> None:
        tel, now = self.telemetry, time.monotonic()
        if self._idle_since is not None and len(events) < self.settings.batching.max_batch_size:
            tel.waited(now - self._idle_since)
        inputs = self.settings.topics.inputs
        tel.consumed(
            {inputs[0]: len(events)}
            if len(inputs) == 1
            else Counter(e.message.topic for e in events),
            len(events),
        )
        self.stats.batches += 1
        batch = FaustBatch(events, [FaustRecord(e.message) for e in events], born=now)
        batch.results = await self.pipeline.process(batch.records)
        await self.outbox.send(batch)
        previous = self._inflight[-1][1] if self._inflight else None
        task = asyncio.ensure_future(self._settle(stream, batch, previous))
        task.add_done_callback(self._settled)
        self._inflight.append((batch, task))
        inflight, bound = self._inflight, self.settings.processing.max_in_flight_batches
        while inflight and inflight[0][1].done():
            inflight.popleft()
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, len(inflight))
        while len(inflight) > bound and self.failure is None:  # backpressure
            await asyncio.wait([inflight[0][1]])
            inflight.popleft()
        self._idle_since = time.monotonic()

    async def _settle(
        self, stream: Any, batch: FaustBatch, previous: asyncio.Task[None] | None
    ) -> None:
        await self.outbox.settle(batch)
        if previous is not None:
            await previous  # raises if it failed: then neither batch is acknowledged
        ack = stream.ack
        for event in batch.events:
            await ack(event)
        dead = batch.dead_letters
        self.acked_predictions += len(batch.events) - dead
        self.acked_dead_letters += dead
        self.telemetry.batch_acknowledged([r.timestamp()[1] for r in batch.records])

    def _settled(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())  # type: ignore[arg-type]

    def _oldest_unacked(self) -> float | None:
        for batch, task in self._inflight:
            if not task.done():
                return batch.produced_at
        return None

    async def _tick(self) -> None:
        """Faust's timer: the loop is alive (``/healthz``), and a failure is noticed."""
        self.telemetry.health.turned()

    # -- rebalances ----------------------------------------------------------------

    def _input_partitions(self, tps: Any) -> list[Any]:
        inputs = set(self.settings.topics.inputs)
        return sorted((tp for tp in tps if tp.topic in inputs), key=lambda tp: tuple(tp))

    def _assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        mine = self._input_partitions(args[0])
        self.stats.assigned += len(mine)
        log.info(
            "assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in mine) or "nothing"
        )
        self.telemetry.health.joined = True
        self.ready.set()

    def _revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        mine = self._input_partitions(args[0])
        self.stats.revoked += len(mine)
        if mine:
            log.info("revoked %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in mine))

    # -- stopping ------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """Remember the first failure and stop; ``run()`` raises it, as one line."""
        if self.failure is not None:
            return
        if isinstance(exc, StreamInferError):
            self.failure = exc
        else:  # Faust's or aiokafka's own: a crash of one of Faust's services
            text = str(exc) or type(exc).__name__
            self.failure = StreamInferError(f"the Faust app stopped: {text}")
            self.failure.__cause__ = exc
        log.error("%s", self.failure)
        loop = self._loop
        if loop is not None and loop.is_running():
            self._begin_stop()

    def _begin_stop(self) -> None:
        if self._stopped is not None:
            return
        if self._stop_deadline == float("inf"):
            self._stop_deadline = time.monotonic() + self.settings.processing.shutdown_timeout_s
        self._stopping = True
        self.telemetry.health.stopping = True
        self._stopped = asyncio.ensure_future(self._graceful())
        if self._exit_on_overrun:
            left = max(0.0, self._stop_deadline - time.monotonic())
            timer = threading.Timer(left + _OVERRUN_S, self._overrun)
            timer.daemon = True
            timer.start()

    def _overrun(self) -> None:
        log.error(
            "Faust did not stop within processing.shutdown_timeout_s + %.0fs; exiting now "
            "(what is not committed is redone by the next owner)", _OVERRUN_S,
        )  # fmt: skip
        logging.shutdown()
        os._exit(1)

    async def _graceful(self) -> None:
        """Finish what was taken (clean stop only), commit, leave: before the deadline.

        Faust's own stop does the work: it stops fetching, drops what its queues
        hold (never acknowledged, so redone by the next owner), waits until every
        event already taken is acknowledged (the agent goes on processing), commits
        and leaves the group. After a failure nothing more may be acknowledged, so
        it is told not to wait: it commits what was acknowledged before the failure.
        """
        started = time.monotonic()
        log.info("stopping%s", f" after error: {self.failure}" if self.failure else "")
        runner = self._runner
        assert runner is not None
        if self.failure is not None:
            runner.app.conf.stream_wait_empty = False
        try:
            left = self._stop_deadline - time.monotonic()
            await asyncio.wait_for(runner.stop(), timeout=max(0.5, left))
        except TimeoutError:
            log.warning(
                "Faust did not stop within processing.shutdown_timeout_s; what is not "
                "committed is redone by the next owner"
            )
        self.pipeline.dead_letter_log.flush()
        log.info("stopped in %.1fs", time.monotonic() - started)
