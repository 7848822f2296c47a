"""``stream-infer dev``: the whole loop on one machine, with one command.

Starts the local broker (unless one already answers at the configured
address), applies the topic declarations, trains the demo model if it is
missing, then runs a worker and the demo producer side by side and reports
progress until a signal or ``--duration``. Ctrl-C, SIGTERM and SIGHUP all stop
the producer, the worker and the broker that dev started, print the summary
and exit 0; a second signal exits at once (the broker still gets its SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import typer

from stream_infer.config import Settings
from stream_infer.errors import StreamInferError

__all__ = ["dev_settings", "run_dev"]

DEV_DATA_DIR = Path(".stream-infer/broker")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _local_port(bootstrap: str) -> int | None:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host in ("localhost", "127.0.0.1") and port.isdigit():
        return int(port)
    return None


def _say(text: str) -> None:
    """Print, but never fail for a terminal that went away (SIGHUP)."""
    with contextlib.suppress(OSError):
        typer.echo(text)


class _Stopped(BaseException):
    """A stop signal during start-up: unwinds to the clean-up."""


class _Signals:
    """SIGINT, SIGTERM and SIGHUP as one request: stop everything dev started.

    During start-up (broker, topics, model, group join) the first signal
    unwinds at once; once running it only sets :attr:`stop`, which the loop
    watches. A second signal runs ``last_words`` and exits at once.
    """

    def __init__(self, last_words: Callable[[], None]) -> None:
        self.stop = threading.Event()
        self.starting = True
        self.name = ""
        self._last_words = last_words
        self._old: dict[int, object] = {}

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            self._last_words()
            os._exit(128 + signum)
        self.name = signal.Signals(signum).name
        self.stop.set()
        if self.starting:
            raise _Stopped(self.name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Signals]:
        for sig in _STOP_SIGNALS:
            self._old[int(sig)] = signal.signal(sig, self)
        try:
            yield self
        finally:
            for signum, old in self._old.items():
                signal.signal(signum, old)  # type: ignore[arg-type]


DEV_SESSION_TIMEOUT_MS = 10_000


def dev_settings(settings: Settings) -> Settings:
    """The settings dev runs with: a stable worker id and a short session, unless set.

    An explicit ``processing.worker_id`` is the worker's static group membership
    (``group.instance.id``), so a dev run that follows a killed one takes its
    partitions back at once instead of waiting out the dead member's session.
    A static member does not leave the group when it stops, though (KIP-345):
    its partitions stay with it until its session expires, and a ``stream-infer
    run`` of the same group started after dev would wait that long. dev's session
    is therefore 10 s instead of librdkafka's 45 s (the broker's minimum is 6 s).
    """
    if "worker_id" in settings.processing.model_fields_set:
        return settings
    processing = settings.processing.model_copy(update={"worker_id": f"dev-{socket.gethostname()}"})
    kafka = settings.kafka
    if "session.timeout.ms" not in kafka.consumer:
        consumer = {**kafka.consumer, "session.timeout.ms": DEV_SESSION_TIMEOUT_MS}
        kafka = kafka.model_copy(update={"consumer": consumer})
    return settings.model_copy(update={"processing": processing, "kafka": kafka})


def _hints(settings: Settings, config: Path | None, metrics_url: str) -> str:
    from stream_infer.tools.invocation import activation, command_prefix

    cmd = command_prefix()
    cfg = f" --config {shlex.quote(str(config))}" if config is not None else ""
    out, dlq = settings.topics.output, settings.topics.dead_letter
    lines = [
        f"  predictions:  {cmd} consume{cfg} --topic {shlex.quote(out)} --from-end",
        f"  dead letters: {cmd} consume{cfg} --topic {shlex.quote(dlq)}",
        f"  group lag:    {cmd} lag{cfg}",
        f"  metrics:      {metrics_url} (and /healthz, /readyz)",
    ]
    activate = activation(cmd)
    if activate:
        lines.append(f"  ({activate} puts plain `stream-infer` on your PATH)")
    return "\n".join(lines)


def run_dev(
    settings: Settings,
    rate: float,
    duration: float,
    poison_every: int,
    keep_broker: bool,
    config: Path | None = None,
) -> None:
    from stream_infer.tools.devbroker import _reachable, broker_status, stop_broker

    settings = dev_settings(settings)
    port = _local_port(settings.kafka.bootstrap_servers)
    start_port = port if port is not None and not _reachable(port) else None
    # Stopped on the way out only if dev started it (not one already running from the folder).
    ours = start_port is not None and not broker_status(DEV_DATA_DIR).running

    def last_words() -> None:  # second signal: no waiting, but no orphaned broker either
        status = broker_status(DEV_DATA_DIR)
        if ours and not keep_broker and status.pid:
            with contextlib.suppress(OSError):
                os.kill(status.pid, signal.SIGTERM)
            _say(f"exiting at once; sent SIGTERM to the local broker (pid {status.pid})")

    signals = _Signals(last_words)
    with signals.installed():
        try:
            _run(settings, rate, duration, poison_every, config, start_port, signals)
        except _Stopped:
            _say(f"{signals.name}: stopped during start-up")
        finally:
            signals.starting = False
            if ours and not keep_broker and stop_broker(DEV_DATA_DIR):
                _say("local broker stopped")


def _run(
    settings: Settings,
    rate: float,
    duration: float,
    poison_every: int,
    config: Path | None,
    start_port: int | None,
    signals: _Signals,
) -> None:
    from stream_infer.kafka.admin import TOOL_TIMEOUT_S, probe_cluster
    from stream_infer.ops.lag import group_lag
    from stream_infer.runtimes.worker import Worker
    from stream_infer.tools.demo import DEMO_MODEL_PATH, train_demo_model
    from stream_infer.tools.devbroker import start_broker
    from stream_infer.tools.loadgen import demo_value_events, produce_events, with_poison
    from stream_infer.tools.topics import apply_topics, default_topics_dir, load_declarations

    say = _say
    if start_port is not None:
        say(f"starting the local Kafka broker on 127.0.0.1:{start_port} (data in {DEV_DATA_DIR})")
        start_broker(start_port, DEV_DATA_DIR)
    probe_cluster(settings.kafka.admin_config(), TOOL_TIMEOUT_S)
    for change in apply_topics(
        settings.kafka.admin_config(), load_declarations(default_topics_dir())
    ):
        say(f"topic {change}")
    model_path = Path(settings.model.path)
    if not model_path.is_file():
        if model_path != DEMO_MODEL_PATH:
            raise StreamInferError(f"model.path: file not found: {model_path}")
        say("training the demo model (scikit-learn breast-cancer data) ...")
        accuracy = train_demo_model(model_path)
        say(f"demo model written to {model_path}, hold-out accuracy {accuracy:.3f}")
    settings = _with_demo_baseline(settings, model_path)
    # Events already in the input topics that the group has not processed yet: the
    # worker predicts them too, so the summary counts them.
    waiting = sum(
        r.lag
        for r in group_lag(settings.kafka.base(), settings.kafka.group_id, settings.topics.inputs)
    )

    worker = Worker(settings)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failure.append(exc)

    stop_producing = threading.Event()
    produced = [0]

    def feed() -> None:
        conf = {**settings.kafka.base(), **settings.kafka.producer_props()}
        events = with_poison(demo_value_events(loop=True), poison_every)
        try:
            produced[0] = produce_events(
                conf,
                settings.topics.inputs[0],
                _counted(events, produced),
                rate=rate,
                stop=stop_producing.is_set,
            )
        except BaseException as exc:
            failure.append(exc)

    worker_thread = threading.Thread(target=work, name="dev-worker", daemon=True)
    worker_thread.start()
    producer_thread = threading.Thread(target=feed, name="dev-producer", daemon=True)
    try:
        if not worker.ready.wait(90) and not failure:
            raise StreamInferError("the worker did not join its group within 90s")
        producer_thread.start()
        inputs, out, dlq = (
            settings.topics.inputs[0],
            settings.topics.output,
            settings.topics.dead_letter,
        )
        provider = worker.model.provider if worker.model else "?"
        say(
            f"\nrunning: demo events -> {inputs} -> worker ({provider}) -> {out} / {dlq}"
            + (f" ({waiting} events were already waiting in {inputs})" if waiting else "")
            + f"\n{_hints(settings, config, worker.telemetry.url)}\n"
            + ("Ctrl-C to stop" if not duration else f"stopping after {duration:.0f}s")
            + "\n"
        )
        signals.starting = False
        start = last = time.monotonic()
        before = (produced[0], sum(worker.counts()))
        while not failure and not signals.stop.is_set():
            if duration and time.monotonic() - start >= duration:
                break
            time.sleep(0.2)
            if time.monotonic() - last >= 5:
                now = time.monotonic()
                preds, dead = worker.counts()
                snap = worker.telemetry.watcher.snapshot
                lag = "?" if snap is None else str(snap.total_lag)
                rate_in = (produced[0] - before[0]) / (now - last)
                rate_out = (preds + dead - before[1]) / (now - last)
                say(
                    f"[{now - start:5.0f}s] in {rate_in:.0f}/s, out {rate_out:.0f}/s, lag {lag}, "
                    f"dead letters {dead} (produced {produced[0]}, predictions {preds})"
                )
                last, before = now, (produced[0], preds + dead)
        if signals.stop.is_set():
            say(f"{signals.name}: stopping ...")
        stop_producing.set()
        if producer_thread.is_alive():
            producer_thread.join(35)
        # Let the worker catch up with what was produced, so the summary adds up.
        deadline = time.monotonic() + 15
        while (
            not failure
            and sum(worker.counts()) < produced[0] + waiting
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
    finally:
        signals.starting = False
        stop_producing.set()
        worker.stop()
        worker_thread.join(40)
    if failure:
        raise failure[0]
    preds, dead = worker.counts()
    also = f" (plus {waiting} already waiting)" if waiting else ""
    say(f"done: produced {produced[0]}{also}, predictions {preds}, dead letters {dead}")


def _with_demo_baseline(settings: Settings, model_path: Path) -> Settings:
    """The demo model comes with its drift baseline: dev shows the PSI gauges with it."""
    from stream_infer.tools.demo import DEMO_MODEL_PATH, baseline_path

    baseline = baseline_path(model_path)
    if settings.drift.baseline or model_path.name != DEMO_MODEL_PATH.name or not baseline.is_file():
        return settings
    drift = settings.drift.model_copy(update={"baseline": str(baseline)})
    return settings.model_copy(update={"drift": drift})


def _counted(
    events: Iterator[tuple[bytes | None, bytes]], counter: list[int]
) -> Iterator[tuple[bytes | None, bytes]]:
    for event in events:
        yield event
        counter[0] += 1
