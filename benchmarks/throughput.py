"""Backlog-drain throughput of one worker on the demo model, beside hand-written loops.

Every contender reads the same pre-produced backlog of demo events from its own copy of the
input topic on the same local broker, in the same run, and writes one prediction per event.
The clock runs from the moment the contender has joined its group until its last prediction
is acknowledged. Contenders:

- ``stream-infer``: the worker (``stream_infer.runtimes.worker.Worker``), default settings;
- ``naive``: poll one message, predict one row, produce, flush, commit (the loop people write);
- ``hand-batched``: consume 512, predict row by row, produce all, flush, commit once.

Run: ``.venv/bin/python benchmarks/throughput.py --events 50000`` (starts its own broker).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from confluent_kafka import Consumer, Producer

from stream_infer.config import Settings
from stream_infer.runtimes.worker import Worker
from stream_infer.tools.demo import demo_events, train_demo_model
from stream_infer.tools.devbroker import free_port, start_broker, stop_broker
from stream_infer.tools.topics import TopicDecl, apply_topics

PARTITIONS = 6


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


def _topics(bootstrap: str, tag: str) -> tuple[str, str, str]:
    names = (f"bench-in-{tag}", f"bench-out-{tag}", f"bench-dlq-{tag}")
    apply_topics(
        {"bootstrap.servers": bootstrap},
        [TopicDecl(name=n, partitions=PARTITIONS if i < 2 else 1) for i, n in enumerate(names)],
    )
    return names


def run_stream_infer(bootstrap: str, model: Path, n: int) -> float:
    inp, out, dlq = _topics(bootstrap, "si-" + uuid.uuid4().hex[:6])
    _fill(bootstrap, inp, n)
    settings = Settings(
        kafka={"bootstrap_servers": bootstrap, "group_id": "bench-" + uuid.uuid4().hex[:6]},
        topics={"inputs": [inp], "output": out, "dead_letter": dlq},
        model={"path": str(model)},
    )  # type: ignore[arg-type]
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(120)
    started = time.perf_counter()
    while sum(worker.counts()) < n:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.stop()
    thread.join(60)
    return elapsed


def _hand_loop(bootstrap: str, model: Path, n: int, batched: bool) -> float:
    tag = ("hb-" if batched else "nv-") + uuid.uuid4().hex[:6]
    inp, out, _ = _topics(bootstrap, tag)
    _fill(bootstrap, inp, n)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-" + tag,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    joined = threading.Event()
    consumer.subscribe([inp], on_assign=lambda c, p: joined.set())
    done = 0
    started = 0.0
    pending: list[Any] = []
    while done < n:
        msgs = consumer.consume(512, 1.0) if batched else [m for m in [consumer.poll(1.0)] if m]
        msgs = [m for m in msgs if m.error() is None]
        if joined.is_set() and not started:
            started = time.perf_counter()
        for msg in msgs:
            doc = json.loads(msg.value())
            x = np.asarray([doc["features"]], dtype=np.float32)
            label, proba = session.run(None, {"X": x})
            value = json.dumps(
                {"id": doc.get("id"), "label": int(label[0]), "probabilities": proba[0].tolist()}
            )
            producer.produce(out, value.encode(), msg.key())
            pending.append(msg)
            if not batched:
                producer.flush()
                consumer.commit(message=msg, asynchronous=False)
        if batched and msgs:
            producer.flush()
            consumer.commit(asynchronous=False)
        done += len(msgs)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


CONTENDERS: dict[str, Callable[[str, Path, int], float]] = {
    "stream-infer": run_stream_infer,
    "hand-batched": lambda b, m, n: _hand_loop(b, m, n, batched=True),
    "naive": lambda b, m, n: _hand_loop(b, m, n, batched=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--naive-events", type=int, default=3_000, help="the naive loop is slow")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="si-bench-"))
    model = work / "demo.onnx"
    train_demo_model(model)
    data = work / "broker"
    bootstrap = args.bootstrap or start_broker(free_port(), data).bootstrap
    results = {}
    try:
        for name, fn in CONTENDERS.items():
            n = args.naive_events if name == "naive" else args.events
            elapsed = fn(bootstrap, model, n)
            results[name] = n / elapsed
            print(f"{name:>13}: {n:>7} events in {elapsed:7.2f}s = {n / elapsed:>9.0f} events/s")
    finally:
        if not args.bootstrap:
            stop_broker(data)
    base = results["stream-infer"]
    for name, rate in results.items():
        print(f"{name:>13}: {rate / base:6.3f} x stream-infer")
    cpu = platform.processor() or "?"
    print(f"machine: {platform.machine()}, {cpu}, python {platform.python_version()}")


if __name__ == "__main__":
    main()
