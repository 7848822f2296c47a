"""What drift monitoring costs end to end: one worker draining a backlog, with and without it.

One input topic (6 partitions) is filled once with demo events; every run is a fresh worker
(default settings, the committed demo model) in a fresh consumer group reading that same
backlog from the start, writing to its own output topic. Runs with ``drift.baseline`` set
(``models/demo.baseline.json``, the default 60 s window) and without it alternate in the
order off, on, on, off, off, on, ... so that a machine that slows down or speeds up during
the benchmark weighs on both alike; one untimed run goes first (page cache, imports). The
clock runs from the moment the worker has joined its group to the moment its last prediction
is acknowledged; each run ends by checking that the output topic holds exactly one
prediction per event. ``/metrics`` is scraped every second in every run, as Prometheus
would (with drift on, each scrape computes every PSI). Besides wall time, each run reports
the CPU time of this process (every thread: worker loop, inference, librdkafka) per event
and, with drift on, the CPU time spent inside ``DriftMonitor.observe``, as a share of it.

Run: ``.venv/bin/python benchmarks/drift_throughput.py --bootstrap HOST:PORT`` (without
``--bootstrap`` it starts its own broker).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from throughput import _fill  # the same demo backlog as benchmarks/throughput.py

from stream_infer.config import Settings
from stream_infer.inference.drift import DriftMonitor
from stream_infer.runtimes.worker import Worker
from stream_infer.tools.devbroker import free_port, start_broker, stop_broker
from stream_infer.tools.topics import TopicDecl, apply_topics

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo.onnx"
BASELINE = ROOT / "models" / "demo.baseline.json"
PARTITIONS = 6


class ObserveClock:
    """CPU seconds spent inside ``DriftMonitor.observe``, measured where the worker calls it.

    Wall time is at the mercy of whoever else uses the machine; the share of the worker's own
    CPU time that goes into ``observe`` is not, so it is the steadier figure of the two. The
    wrapper reads the calling thread's CPU clock twice per batch (well under a microsecond).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        original = DriftMonitor.observe

        def timed(monitor: DriftMonitor, *args: Any, **kwargs: Any) -> None:
            start = time.thread_time()
            try:
                original(monitor, *args, **kwargs)
            finally:
                self.seconds += time.thread_time() - start
                self.calls += 1

        DriftMonitor.observe = timed  # type: ignore[method-assign]

    def take(self) -> tuple[float, int]:
        seconds, calls = self.seconds, self.calls
        self.seconds, self.calls = 0.0, 0
        return seconds, calls


def _size(bootstrap: str, topic: str) -> int:
    client = Consumer({"bootstrap.servers": bootstrap, "group.id": "size-" + uuid.uuid4().hex})
    try:
        meta = client.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        client.close()


def _wait_visible(bootstrap: str, topics: list[str], timeout: float = 60.0) -> None:
    """Until the broker's metadata lists ``topics``: the worker checks them once at start-up,
    and on a loaded machine a topic just created can take a moment to show."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while not set(topics) <= set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, f"topics not visible after {timeout}s: {topics}"
        time.sleep(0.1)


def _scrape_every_second(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


@dataclass
class Run:
    drift: bool
    wall: float  # seconds from group join to the last acknowledged prediction
    cpu: float  # CPU seconds of this process meanwhile, every thread
    inference_cpu: float  # CPU seconds of the worker's inference thread (model, observe, encode)
    observe: float = 0.0  # CPU seconds inside DriftMonitor.observe
    calls: int = 0


def _thread_clock(name: str) -> int:
    """The CPU clock of the worker's thread called ``name`` (Linux: per-thread CPU time)."""
    for t in threading.enumerate():
        if t.name == name and t.ident is not None:
            return time.pthread_getcpuclockid(t.ident)
    raise AssertionError(f"no thread {name}")


def drain(bootstrap: str, source: str, n: int, drift: bool, created: list[str]) -> Run:
    """A fresh worker predicts the whole backlog of ``source``: how long, at what CPU cost."""
    tag = ("on-" if drift else "off-") + uuid.uuid4().hex[:6]
    out, dlq = f"drift-bench-out-{tag}", f"drift-bench-dlq-{tag}"
    apply_topics(
        {"bootstrap.servers": bootstrap},
        [TopicDecl(name=out, partitions=PARTITIONS), TopicDecl(name=dlq, partitions=1)],
    )
    created += [out, dlq]
    _wait_visible(bootstrap, [out, dlq])
    settings = Settings(
        kafka={"bootstrap_servers": bootstrap, "group_id": "drift-bench-" + tag},
        topics={"inputs": [source], "output": out, "dead_letter": dlq},
        model={"path": str(MODEL)},
        metrics={"port": 0},
        drift={"baseline": str(BASELINE) if drift else ""},
    )  # type: ignore[arg-type]
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(120), "the worker did not join its group"
    inference = _thread_clock("stream-infer-inference")
    started, cpu = time.perf_counter(), time.process_time()
    infer_cpu = time.clock_gettime(inference)
    stop = threading.Event()
    port = worker.telemetry.port
    assert port is not None
    scraper = threading.Thread(target=_scrape_every_second, args=(port, stop), daemon=True)
    scraper.start()
    while sum(worker.counts()) < n:
        time.sleep(0.005)
    run = Run(
        drift,
        time.perf_counter() - started,
        time.process_time() - cpu,
        time.clock_gettime(inference) - infer_cpu,
    )
    stop.set()
    worker.stop()
    thread.join(60)
    predictions, letters = worker.counts()
    assert (predictions, letters) == (n, 0), (predictions, letters)
    assert _size(bootstrap, out) == n
    return run


def _machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}, {platform.machine()}), Python {platform.python_version()}, "
        f"numpy {np.__version__}, onnxruntime {ort.__version__}"
    )


def _line(run: Run, n: int) -> str:
    text = (
        f"drift {'on ' if run.drift else 'off'}: {n} events in {run.wall:6.2f}s = "
        f"{n / run.wall:7.0f} events/s; CPU/event {run.cpu / n * 1e6:5.2f} us, "
        f"inference thread {run.inference_cpu / n * 1e6:5.2f} us"
    )
    if run.drift:
        text += (
            f"; observe {run.observe * 1e3:3.0f} ms in {run.calls} calls = "
            f"{run.observe / run.cpu:6.2%} of CPU, {run.observe / run.inference_cpu:6.2%} of "
            "the inference thread"
        )
    return text


def _summary(runs: list[Run], n: int) -> None:
    def median(drift: bool, value: Callable[[Run], float]) -> float:
        return statistics.median(value(r) for r in runs if r.drift == drift)

    for what, value in (
        ("wall", lambda r: r.wall),
        ("CPU", lambda r: r.cpu),
        ("inference thread CPU", lambda r: r.inference_cpu),
    ):
        off, on = median(False, value), median(True, value)
        print(f"{what}, median: off {off:.2f}s, on {on:.2f}s ({on / off - 1:+.1%})")
    print(
        f"observe, median: {median(True, lambda r: r.observe / r.cpu):.2%} of the process's CPU, "
        f"{median(True, lambda r: r.observe / r.inference_cpu):.2%} of the inference thread's"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="si-drift-bench-"))
    bootstrap = args.bootstrap or start_broker(free_port(), work / "broker").bootstrap
    source = "drift-bench-in-" + uuid.uuid4().hex[:6]
    created = [source]
    apply_topics({"bootstrap.servers": bootstrap}, [TopicDecl(name=source, partitions=PARTITIONS)])
    _wait_visible(bootstrap, [source])
    runs: list[Run] = []
    clock = ObserveClock()
    try:
        _fill(bootstrap, source, args.events)
        drain(bootstrap, source, args.events, False, created)  # warm-up, not counted
        # off, on, on, off, off, on, ...: each kind as often first as second in a pair.
        order = [(i % 2 == 0) != (r % 2 == 0) for r in range(args.runs) for i in range(2)]
        for drift in order:
            load = os.getloadavg()[0]
            run = drain(bootstrap, source, args.events, drift, created)
            run.observe, run.calls = clock.take()
            runs.append(run)
            print(_line(run, args.events) + f" (load before: {load:.2f})", flush=True)
    finally:
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics(created)
        if not args.bootstrap:
            stop_broker(work / "broker")
    _summary(runs, args.events)
    print(f"machine: {_machine()}")


if __name__ == "__main__":
    main()
