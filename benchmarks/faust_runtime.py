"""The Faust runtime's throughput beside a plain Faust echo agent, on the same events.

One backlog of demo events (breast-cancer rows, 30 features) is produced once to a
6-partition topic; every contender drains all of it with a consumer group of its own
and writes one record per event to an output topic of its own. Each contender runs in
a process of its own, one after the other, in rounds (so slow phases of a shared
machine spread over all of them). The clock runs from partition assignment until the
last output of the backlog is acknowledged by the broker. Contenders:

- ``echo``: a plain Faust agent, ``stream.take(512, within=0.01)``, one small JSON per
  event sent with ``topic.send``: the ceiling of any Faust agent on this machine;
- ``faust``: ``stream-infer run --runtime faust`` (``FaustWorker``), defaults;
- ``faust-inline``: the same with inference on the event loop (no executor);
- ``native``: the default runtime (``Worker``), for scale.

Run: ``.venv/bin/python benchmarks/faust_runtime.py --bootstrap 127.0.0.1:9092``
(without ``--bootstrap`` it starts a broker of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from stream_infer.config import Settings
from stream_infer.tools.demo import demo_events
from stream_infer.tools.devbroker import free_port, start_broker, stop_broker
from stream_infer.tools.topics import TopicDecl, apply_topics

PARTITIONS = 6
ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("echo", "faust", "faust-inline", "native")


def _fill(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
    )
    source = demo_events(loop=True)
    for _ in range(n):
        key, event = next(source)
        while True:
            try:
                producer.produce(topic, orjson.dumps(event), key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0


def _settings(bootstrap: str, topic: str, model: Path, tag: str) -> Settings:
    out, dlq = f"fbench-out-{tag}", f"fbench-dlq-{tag}"
    apply_topics(
        {"bootstrap.servers": bootstrap},
        [TopicDecl(name=out, partitions=PARTITIONS), TopicDecl(name=dlq, partitions=1)],
    )
    return Settings(
        kafka={"bootstrap_servers": bootstrap, "group_id": f"fbench-{tag}"},
        topics={"inputs": [topic], "output": out, "dead_letter": dlq},
        model={"path": str(model)},
        metrics={"port": 0},
        logging={"level": "WARNING"},
    )  # type: ignore[arg-type]


def _worker(settings: Settings, n: int, kind: str) -> float:
    if kind == "native":
        from stream_infer.runtimes.worker import Worker

        worker: Any = Worker(settings)
    else:
        from stream_infer.runtimes.faust import FaustWorker

        worker = FaustWorker(settings, inline=kind == "faust-inline")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(120), "the worker did not join its group"
    started = time.perf_counter()
    while sum(worker.counts()) < n:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.stop()
    thread.join(60)
    return elapsed


def _echo(settings: Settings, n: int) -> float:
    """A plain Faust agent: take 512 within 10 ms, send one small JSON per event."""
    import faust

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = faust.App(
        settings.kafka.group_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        datadir=tempfile.mkdtemp(prefix="fbench-echo-"),
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(*settings.topics.inputs, key_serializer="raw", value_serializer="raw")
    sink = app.topic(settings.topics.output, key_serializer="raw", value_serializer="raw")
    clock = {"started": 0.0, "done": 0.0, "count": 0}

    @app.agent(source)
    async def echo(stream: Any) -> None:
        async for values in stream.take(512, within=0.01):
            last = None
            for _ in values:
                clock["count"] += 1
                last = await sink.send(value=orjson.dumps({"n": clock["count"], "ok": True}))
            if clock["count"] >= n and not clock["done"]:
                await last  # the last one acknowledged; earlier ones were sent before it
                await app.producer.flush()
                clock["done"] = time.perf_counter()
                loop.call_soon(lambda: asyncio.ensure_future(worker.stop()))

    def assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        if args[0] and not clock["started"]:
            clock["started"] = time.perf_counter()

    app.on_partitions_assigned.connect(assigned)
    worker = faust.Worker(app, loop=loop, quiet=True, redirect_stdouts=False)
    worker.install_signal_handlers = lambda: None
    worker.spinner = None
    try:
        loop.run_until_complete(worker.start())
    finally:
        worker.stop_and_shutdown()
    return clock["done"] - clock["started"]


def contender(kind: str, bootstrap: str, topic: str, model: Path, n: int) -> None:
    """One contender in this process; prints its result as one JSON line."""
    settings = _settings(bootstrap, topic, model, f"{kind}-{uuid.uuid4().hex[:6]}")
    elapsed = _echo(settings, n) if kind == "echo" else _worker(settings, n, kind)
    print(json.dumps({"kind": kind, "events": n, "seconds": elapsed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        contender(args.contender, args.bootstrap, args.topic, Path(args.model), args.events)
        return
    model = ROOT / "models" / "demo.onnx"
    data = Path(tempfile.mkdtemp(prefix="fbench-broker-"))
    bootstrap = args.bootstrap or start_broker(free_port(), data).bootstrap
    rates: dict[str, list[float]] = {kind: [] for kind in args.only}
    try:
        topic = f"fbench-in-{uuid.uuid4().hex[:6]}"
        apply_topics(
            {"bootstrap.servers": bootstrap}, [TopicDecl(name=topic, partitions=PARTITIONS)]
        )
        _fill(bootstrap, topic, args.events)
        for rnd in range(args.rounds):
            for kind in args.only:
                command = [sys.executable, __file__, "--contender", kind]
                command += ["--bootstrap", bootstrap, "--topic", topic, "--model", str(model)]
                out = subprocess.run(
                    [*command, "--events", str(args.events)],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rate = result["events"] / result["seconds"]
                rates[kind].append(rate)
                print(f"round {rnd + 1} {kind:>12}: {rate:>9.0f} events/s", flush=True)
    finally:
        if not args.bootstrap:
            stop_broker(data)
    print()
    print("| contender | runs (events/s) | median events/s | vs echo |")
    print("|---|---|---:|---:|")
    echo = statistics.median(rates["echo"]) if rates.get("echo") else None
    for kind, runs in rates.items():
        med = statistics.median(runs)
        ratio = f"{med / echo:.2f}" if echo else "-"
        listed = ", ".join(f"{r:,.0f}" for r in runs)
        print(f"| {kind} | {listed} | {med:,.0f} | {ratio} |")
    print(f"\nmachine: {platform.machine()}, {platform.processor() or '?'}, "
          f"python {platform.python_version()}")  # fmt: skip


if __name__ == "__main__":
    main()
