"""Soak: one worker with default settings under a steady open-loop load; is its memory flat?

The worker (the bench's ``stream-infer`` contender, its own process) gets 200 warm-up
events, then the bench's open-loop generator offers ``--rate`` events/s for ``--minutes``.
The harness samples the worker's RSS every 5 s and reads its outputs (``read_committed``)
for the event-to-prediction latency, minute by minute. The verdict compares the RSS of
the last minute with the first: flat means within 10% (and the peak under 400 MB).

Run: ``.venv/bin/python benchmarks/soak_rss.py --minutes 10 --rate 60000 [--bootstrap B]``
(without ``--bootstrap`` it starts a broker of its own). Writes
``benchmarks/results/<date>-soak.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from stream_infer.tools.bench.broker import bench_broker
from stream_infer.tools.bench.contenders import CONTENDERS
from stream_infer.tools.bench.harness import PARTITIONS, Harness
from stream_infer.tools.bench.latency import OutputReader, offered_load
from stream_infer.tools.bench.machine import describe_machine, machine_line
from stream_infer.tools.bench.models import resolve_model
from stream_infer.tools.bench.process import ContenderProcess

_SAMPLE_S = 5.0
_WARMUP = 200


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def soak(
    bootstrap: str, rate: float, minutes: float, work: Path, own_broker: bool, storage: str = ""
) -> tuple[str, bool]:
    """Run the soak; the markdown report, and whether memory stayed flat."""
    model = resolve_model("tabular", work)
    harness = Harness(bootstrap, model.path, work, uuid.uuid4().hex[:8])
    contender = CONTENDERS["stream-infer"]
    try:
        topic = harness.topic("soak-in")
        target = harness.target(contender, topic, 0, "soak")
        reader = OutputReader(bootstrap, target.output, PARTITIONS, contender.event_time)
        proc = ContenderProcess(contender.argv(target), target.work / "log.txt")
        samples: list[tuple[float, int]] = []
        done = threading.Event()
        try:
            harness.fill(topic, _WARMUP, lambda _n: None)
            if not reader.wait_for(_WARMUP, 120.0, proc.check_alive):
                raise SystemExit(f"warm-up got no outputs: {proc.tail()}")
            start = time.monotonic()

            def sample() -> None:
                while not done.wait(_SAMPLE_S):
                    samples.append((time.monotonic() - start, proc.rss()))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            with (target.work / "openloop.log").open("ab") as log:
                sent = offered_load(bootstrap, topic, str(model.path), rate, minutes * 60, log)
            reader.wait_for(_WARMUP + sent["sent"], 60.0, proc.check_alive)
            done.set()
            sampler.join()
            peak = proc.peak_rss()
            received = reader.total - _WARMUP
            rows = []
            first_ms = sent["first_ms"]
            for minute in range(int(minutes)):
                lo = first_ms + minute * 60_000
                _, lat = reader.latencies(lo, lo + 59_999)
                rss = [r for t, r in samples if minute * 60 <= t < (minute + 1) * 60]
                p50, p99 = (np.percentile(lat, [50, 99]) / 1000.0) if len(lat) else (0, 0)
                rows.append(
                    f"| {minute + 1} | {len(lat) / 60:,.0f} | {p50:.0f} | {p99:.0f} | "
                    f"{_mib(min(rss)) if rss else '-'} | {_mib(max(rss)) if rss else '-'} |"
                )
        finally:
            done.set()
            proc.stop()
            reader.close()
        first = [r for t, r in samples if t < 60] or [samples[0][1]]
        last = [r for t, r in samples if t >= (minutes - 1) * 60] or [samples[-1][1]]
        growth = float(np.mean(last)) / float(np.mean(first)) - 1.0
        flat = abs(growth) <= 0.10 and peak <= 400 * 2**20
        machine = machine_line(describe_machine(bootstrap, own_broker, storage))
        text = "\n".join(
            [
                f"# Soak: one worker, {rate:,.0f} events/s offered for {minutes:g} minutes "
                f"({datetime.date.today().isoformat()})",
                "",
                f"Machine: {machine}",
                "",
                f"Command: `python benchmarks/soak_rss.py --minutes {minutes:g} --rate {rate:g}`",
                "",
                f"Sent {sent['sent']:,} events (the generator fell behind its schedule by at "
                f"most {sent['max_lag_ms']:,.0f} ms), received {received:,} predictions.",
                "",
                "| minute | predictions/s | p50 ms | p99 ms | RSS min MiB | RSS max MiB |",
                "|---:|---:|---:|---:|---:|---:|",
                *rows,
                "",
                f"Peak RSS (VmHWM) {_mib(peak)} MiB; mean RSS of the last minute vs the first: "
                f"{growth:+.1%}. Verdict: {'flat' if flat else 'NOT flat'} (within 10%, peak "
                "at most 400 MB).",
                "",
            ]
        )
        return text, flat
    finally:
        harness.delete_topics()
        harness.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        # Input and outputs at about 400 bytes an event: tmpfs only where that fits twice.
        written = int(args.rate * args.minutes * 60 * 400)
        with bench_broker(args.bootstrap, work, room=written) as broker:
            own = broker.pid is not None
            text, flat = soak(broker.bootstrap, args.rate, args.minutes, work, own, broker.storage)
    day = datetime.date.today().isoformat()
    out = args.out or Path(__file__).parent / "results" / f"{day}-soak.md"
    out.write_text(text)
    print(text)
    raise SystemExit(0 if flat else 1)


if __name__ == "__main__":
    main()
