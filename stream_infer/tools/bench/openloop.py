"""The latency load: an open-loop, rate-controlled producer run as its own process.

``python -m stream_infer.tools.bench.openloop --bootstrap B --topic T --model M --rate R
--duration S`` sends ``R * S`` events shaped for the model, each stamped (as its Kafka
timestamp, CreateTime) with the wall-clock time it was *due* under the schedule of
:class:`~stream_infer.tools.bench.pacer.OpenLoopPacer`, then prints one JSON line: events
sent, the due times of the first and last (epoch ms), and how far it ever fell behind.

A process of its own, so that the harness's reader and this pacing never share a GIL.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from stream_infer.tools.bench.models import model_events
from stream_infer.tools.bench.pacer import OpenLoopPacer, run_open_loop

__all__ = ["main"]

# A producer as most are configured: librdkafka's default linger (5 ms, also the Java
# client's since Kafka 4.0), the same for every contender. The time an event waits in
# this buffer counts in its latency, since the clock starts when it was due. A 1 ms linger
# measured worse for every contender on the 2-core machine: it sends five times as many
# produce requests, and the broker's extra CPU (73% of a core against 35%, at 66,000
# events/s) comes out of the cores the contender needs.
# Delivery reports only for failures: a Python callback per event would cost the generator
# (and the contender beside it) CPU the measurement needs.
_PRODUCER = {
    "linger.ms": 5,
    "acks": "all",
    "enable.idempotence": True,
    "delivery.report.only.error": True,
}
_DISTINCT = 20_000  # pre-built payloads, cycled: no JSON is encoded on the clock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stream_infer.tools.bench.openloop")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)

    from confluent_kafka import Producer

    total = max(1, round(args.rate * args.duration))
    payloads = model_events(Path(args.model), min(total, _DISTINCT), seed=args.seed)
    producer = Producer({"bootstrap.servers": args.bootstrap, **_PRODUCER})
    failed: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    topic, produce, poll, n = args.topic, producer.produce, producer.poll, len(payloads)
    # Connected before the clock starts: one event per partition is sent and acknowledged
    # untimed (stamped when sent, so it falls outside the measured window), so that the
    # metadata, the leaders' connections and the idempotent producer's id do not take their
    # few hundred milliseconds out of the first timed events' latency.
    partitions = len(producer.list_topics(topic, timeout=30).topics[topic].partitions)
    for p in range(partitions):
        key, value = payloads[p % n]
        produce(topic, value, key, partition=p, timestamp=int(time.time() * 1000) - 1)
    if producer.flush(30):
        raise SystemExit(f"the first events to {topic} were not acknowledged within 30 s")
    pacer = OpenLoopPacer(args.rate, total)
    # One clock for everything: due times are mapped from the monotonic schedule to the
    # wall clock once, here, and the reader compares them with its own wall clock.
    epoch_ms = time.time() * 1000.0 - pacer.start * 1000.0

    def send(i: int, due: float) -> None:
        key, value = payloads[i % n]
        stamp = int(epoch_ms + due * 1000.0)
        while True:
            try:
                produce(topic, value, key, timestamp=stamp, on_delivery=on_delivery)
                return
            except BufferError:
                poll(0.01)

    def between() -> None:
        poll(0)  # delivery reports

    report = run_open_loop(pacer, send, between)
    left = producer.flush(30)
    print(
        json.dumps(
            {
                "sent": report.sent + partitions,  # the untimed ones are predicted too
                "first_ms": int(epoch_ms + pacer.intended(0) * 1000.0),
                "last_ms": int(epoch_ms + pacer.intended(total - 1) * 1000.0),
                "max_lag_ms": report.max_lag_s * 1000.0,
                "undelivered": left + len(failed),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
