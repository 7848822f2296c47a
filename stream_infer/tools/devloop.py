"""``stream-infer dev``: the whole loop on one machine, with one command.

Starts the local broker (unless one already answers at the configured
address), applies the topic declarations, trains the demo model if it is
missing, then runs a worker and the demo producer side by side and reports
progress until Ctrl-C or ``--duration``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from stream_infer.config import Settings
from stream_infer.errors import StreamInferError

__all__ = ["run_dev"]

DEV_DATA_DIR = Path(".stream-infer/broker")


def _local_port(bootstrap: str) -> int | None:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host in ("localhost", "127.0.0.1") and port.isdigit():
        return int(port)
    return None


def _with_poison(every: int) -> Iterator[tuple[bytes | None, bytes]]:
    from stream_infer.tools.loadgen import demo_value_events

    bad = [
        b'{"id": "poison", "features": "thirty numbers"',
        b'{"id": "poison", "features": [1, 2, 3]}',
    ]
    for n, event in enumerate(demo_value_events(loop=True), start=1):
        if every and n % every == 0:
            yield b"poison", bad[(n // every) % 2]
        else:
            yield event


def run_dev(
    settings: Settings, rate: float, duration: float, poison_every: int, keep_broker: bool
) -> None:
    from stream_infer.runtimes.worker import Worker
    from stream_infer.tools.demo import DEMO_MODEL_PATH, train_demo_model
    from stream_infer.tools.devbroker import _reachable, start_broker, stop_broker
    from stream_infer.tools.loadgen import produce_events
    from stream_infer.tools.topics import apply_topics, default_topics_dir, load_declarations

    say = typer.echo
    port = _local_port(settings.kafka.bootstrap_servers)
    started = False
    if port is not None and not _reachable(port):
        say(f"starting the local Kafka broker on 127.0.0.1:{port} (data in {DEV_DATA_DIR})")
        start_broker(port, DEV_DATA_DIR)
        started = True
    try:
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
            conf = {**settings.kafka.base(), **settings.kafka.producer}
            try:
                produced[0] = produce_events(
                    conf,
                    settings.topics.inputs[0],
                    _counted(_with_poison(poison_every), produced),
                    rate=rate,
                    stop=stop_producing.is_set,
                )
            except BaseException as exc:
                failure.append(exc)

        worker_thread = threading.Thread(target=work, name="dev-worker", daemon=True)
        worker_thread.start()
        if not worker.ready.wait(90) and not failure:
            raise StreamInferError("the worker did not join its group within 90s")
        producer_thread = threading.Thread(target=feed, name="dev-producer", daemon=True)
        producer_thread.start()
        inputs, out, dlq = (
            settings.topics.inputs[0],
            settings.topics.output,
            settings.topics.dead_letter,
        )
        provider = worker.model.provider if worker.model else "?"
        say(
            f"\nrunning: demo events -> {inputs} -> worker ({provider}) -> {out} / {dlq}\n"
            f"  predictions:  stream-infer consume --topic {out} --from-end\n"
            f"  dead letters: stream-infer consume --topic {dlq}\n"
            f"  group lag:    stream-infer lag\n"
            f"  metrics:      http://localhost:{settings.metrics.port}/metrics "
            "(served once the metrics server lands)\n"
            f"{'Ctrl-C to stop' if not duration else f'stopping after {duration:.0f}s'}\n"
        )
        start = time.monotonic()
        last = start
        try:
            while not failure and (not duration or time.monotonic() - start < duration):
                time.sleep(0.2)
                if time.monotonic() - last >= 5:
                    last = time.monotonic()
                    preds, dead = worker.counts()
                    elapsed, made = f"[{last - start:5.0f}s]", produced[0]
                    say(f"{elapsed} produced {made}, predictions {preds}, dead letters {dead}")
        except KeyboardInterrupt:
            say("stopping ...")
        stop_producing.set()
        producer_thread.join(35)
        # Let the worker catch up with what was produced, so the summary adds up.
        deadline = time.monotonic() + 15
        while not failure and sum(worker.counts()) < produced[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        worker.stop()
        worker_thread.join(40)
        if failure:
            raise failure[0]
        preds, dead = worker.counts()
        say(f"done: produced {produced[0]}, predictions {preds}, dead letters {dead}")
    finally:
        if started and not keep_broker:
            stop_broker(DEV_DATA_DIR)
            say("local broker stopped")


def _counted(
    events: Iterator[tuple[bytes | None, bytes]], counter: list[int]
) -> Iterator[tuple[bytes | None, bytes]]:
    for event in events:
        yield event
        counter[0] += 1
