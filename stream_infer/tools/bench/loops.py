"""The hand-written contenders, each run as its own process by the harness.

``python -m stream_infer.tools.bench.loops NAME --bootstrap B --input T --output O --group G
--model M`` runs one of:

- ``bare``: consume in batches of 512 (or what came within 10 ms) and produce each value
  unchanged (key, value and timestamp, as a mirror would): no decoding, no model,
  auto-commit. The client's ceiling.
- ``tutorial``: poll one event, ``json.loads``, predict one row, produce, flush, commit
  synchronously: the loop most tutorials show.
- ``hand-batched``: consume 512 (or 10 ms), ``json.loads`` each, one onnxruntime call per
  batch, produce every prediction, flush, commit once per batch.
- ``ort``: onnxruntime alone on pre-built arrays in batches of ``--batch`` rows, no Kafka:
  the model's ceiling. Prints one JSON line with its window, CPU and peak RSS.

Their producers use stream-infer's producer defaults (idempotent, ``acks=all``, ``linger.ms``
5, lz4), so produce costs the same everywhere. They use only confluent-kafka, onnxruntime,
numpy and the standard library's ``json``, as a hand-written service would; nothing of
stream-infer's pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PRODUCER_DEFAULTS", "feeds", "main", "open_session", "row_of"]

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
}
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
# A batch closes at --batch records or after this wait, as the worker's does by default
# (batching.max_wait_ms 10) and the Faust contender's take(within=0.01).
_WAIT_S = 0.01
_stopping = False


def _on_signal(_signum: int, _frame: Any) -> None:
    global _stopping
    _stopping = True


def open_session(model: str) -> Any:
    """onnxruntime's defaults, as a hand-written loop has them, but for a pinned process.

    Pinned to fewer cores than the machine has (``bench --contender-cpus``), the pool is
    sized to the cores it may use: onnxruntime's default counts the machine's, and would
    crowd them (4,300 rows/s against 5,600 for the heavy model on one core), which
    would understate the model's ceiling and every hand-written contender.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    if 0 < usable < (os.cpu_count() or 1):
        options.intra_op_num_threads = usable
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def feeds(session: Any, docs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    inputs = session.get_inputs()
    if len(inputs) == 1:
        spec = inputs[0]
        return {spec.name: np.asarray([d["features"] for d in docs], _DTYPES[spec.type])}
    return {
        s.name: np.asarray([d["features"][s.name] for d in docs], _DTYPES[s.type]) for s in inputs
    }


def row_of(value: Any, j: int) -> Any:
    item = value[j]
    return item.tolist() if hasattr(item, "tolist") else item


def _clients(args: argparse.Namespace, auto_commit: bool) -> tuple[Any, Any]:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": auto_commit,
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap, **PRODUCER_DEFAULTS})
    consumer.subscribe([args.input])
    return consumer, producer


def _produce(producer: Any, topic: str, value: bytes, key: Any, **kw: Any) -> None:
    while True:
        try:
            producer.produce(topic, value, key, **kw)
            return
        except BufferError:
            producer.poll(0.05)


def bare(args: argparse.Namespace) -> None:
    consumer, producer = _clients(args, auto_commit=True)
    out = args.output
    while not _stopping:
        for msg in consumer.consume(args.batch, _WAIT_S):
            if msg.error() is None:
                _produce(producer, out, msg.value(), msg.key(), timestamp=msg.timestamp()[1])
        producer.poll(0)
    producer.flush(10)
    consumer.close()


def _prediction(names: list[str], outs: list[Any], j: int, doc: dict[str, Any], msg: Any) -> bytes:
    return json.dumps(
        {
            "id": doc.get("id"),
            "model": "bench",
            "model_version": "1",
            "outputs": {n: row_of(o, j) for n, o in zip(names, outs, strict=True)},
            "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
            "event_time_ms": msg.timestamp()[1],
        }
    ).encode()


def tutorial(args: argparse.Namespace) -> None:
    session = open_session(args.model)
    names = [o.name for o in session.get_outputs()]
    consumer, producer = _clients(args, auto_commit=False)
    while not _stopping:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        doc = json.loads(msg.value())
        outs = session.run(None, feeds(session, [doc]))
        producer.produce(args.output, _prediction(names, outs, 0, doc, msg), msg.key())
        producer.flush()
        consumer.commit(message=msg, asynchronous=False)
    consumer.close()


def hand_batched(args: argparse.Namespace) -> None:
    session = open_session(args.model)
    names = [o.name for o in session.get_outputs()]
    consumer, producer = _clients(args, auto_commit=False)
    while not _stopping:
        msgs = [m for m in consumer.consume(args.batch, _WAIT_S) if m.error() is None]
        if not msgs:
            continue
        docs = [json.loads(m.value()) for m in msgs]
        outs = session.run(None, feeds(session, docs))
        for j, (doc, msg) in enumerate(zip(docs, msgs, strict=True)):
            _produce(producer, args.output, _prediction(names, outs, j, doc, msg), msg.key())
        producer.flush()
        consumer.commit(asynchronous=False)
    consumer.close()


def ort_alone(args: argparse.Namespace) -> None:
    """Batches of pre-built arrays; the figure is the 10%-90% window of the rows, like Kafka's."""
    from stream_infer.tools.bench.models import model_events

    session = open_session(args.model)
    docs = [json.loads(v) for _, v in model_events(Path(args.model), args.batch, seed=1)]
    batch = feeds(session, docs)
    for _ in range(5):  # warm-up, as the worker does before joining its group
        session.run(None, batch)
    # At least --rows rows and at least about two seconds, so that a fast model is timed
    # over many calls rather than a few hundred microseconds.
    started = time.perf_counter()
    for _ in range(5):
        session.run(None, batch)
    per_call = max((time.perf_counter() - started) / 5, 1e-6)
    batches = max(10, -(-args.rows // args.batch), round(2.0 / per_call))
    marks: list[tuple[float, float]] = []
    for _ in range(batches):
        marks.append((time.perf_counter(), time.process_time()))
        session.run(None, batch)
    marks.append((time.perf_counter(), time.process_time()))
    lo, hi = round(batches * 0.1), round(batches * 0.9)
    rows = (hi - lo) * args.batch
    seconds = marks[hi][0] - marks[lo][0]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "rows": rows,
        "seconds": seconds,
        "rate": rows / seconds,
        "cpu_s": marks[hi][1] - marks[lo][1],
        "peak_rss": peak_kib * 1024,
        "batch": args.batch,
    }
    print(json.dumps(report), flush=True)


_LOOPS: dict[str, Callable[[argparse.Namespace], None]] = {
    "bare": bare,
    "tutorial": tutorial,
    "hand-batched": hand_batched,
    "ort": ort_alone,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stream_infer.tools.bench.loops")
    parser.add_argument("loop", choices=sorted(_LOOPS))
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--input", default="")
    parser.add_argument("--output", default="")
    parser.add_argument("--group", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    _LOOPS[args.loop](args)


if __name__ == "__main__":
    main()
