"""What each setting the worker tunes is worth, measured one change at a time.

Every variant is the bench's ``stream-infer`` contender (its own process, the tabular
model unless ``--model``) with one setting put back to the library's default or moved the
other way. Each gets
catch-up runs over pre-filled events (rounds in rotated order, as ``stream-infer bench``
does) and one open-loop latency step at a fixed offered rate, so that a setting that buys
throughput with latency, or the reverse, shows both.

Run: ``.venv/bin/python benchmarks/tuning.py [--events 300000] [--rounds 2] [--rate 66000]
[--model tabular|heavy|F] [--variants defaults,one-lane,...]``
(it starts a broker of its own unless given ``--bootstrap``). Writes
``benchmarks/results/<date>-tuning.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import tempfile
import uuid
from pathlib import Path

from stream_infer.tools.bench.broker import bench_broker
from stream_infer.tools.bench.contenders import Contender, rotated, worker_contender
from stream_infer.tools.bench.harness import Harness, RunResult
from stream_infer.tools.bench.latency import LatencyStep
from stream_infer.tools.bench.machine import describe_machine, machine_line
from stream_infer.tools.bench.models import resolve_model

_Overrides = dict[str, dict[str, object]]


def _kafka(client: str, props: dict[str, object]) -> _Overrides:
    return {"kafka": {client: props}}


# name -> (what differs from the worker's defaults, the settings that make it so)
VARIANTS: dict[str, tuple[str, _Overrides]] = {
    "defaults": ("the worker's defaults", {}),
    "fetch-256k": (
        "consumer fetch.min.bytes 256 KiB, fetch.wait.max.ms 5 (half the batch wait)",
        _kafka("consumer", {"fetch.min.bytes": 256 * 1024, "fetch.wait.max.ms": 5}),
    ),
    "linger-1": ("producer linger.ms 1", _kafka("producer", {"linger.ms": 1})),
    "linger-20": ("producer linger.ms 20", _kafka("producer", {"linger.ms": 20})),
    "no-compression": (
        "producer compression.type none",
        _kafka("producer", {"compression.type": "none"}),
    ),
    "one-lane": ("model.concurrent_batches 1", {"model": {"concurrent_batches": 1}}),
}


def _contender(name: str) -> Contender:
    description, overrides = VARIANTS[name]
    return worker_contender(name, description, overrides=overrides)


def run(
    bootstrap: str, broker_pid: int | None, work: Path, args: argparse.Namespace
) -> tuple[dict[str, list[RunResult]], dict[str, LatencyStep]]:
    model = resolve_model(args.model, work)
    harness = Harness(bootstrap, model.path, work, uuid.uuid4().hex[:8], broker_pid)
    names, events, rate = args.variants, args.events, args.rate
    runs: dict[str, list[RunResult]] = {n: [] for n in names}
    steps: dict[str, LatencyStep] = {}
    try:
        topic = harness.topic("tuning-in")
        harness.fill(topic, events, lambda _n: None)
        if args.warmup > 0:  # untimed runs first, as bench does (its README, Method)
            first = _contender(names[0])
            warm = harness.warm_up(first, topic, events, args.warmup, lambda _n: None)
            rates = ", ".join(f"{r.rate or 0:,.0f}" for r in warm)
            print(f"warm-up: {names[0]}: {rates} events/s", flush=True)
        for round_no in range(1, args.rounds + 1):
            for name in rotated(names, round_no):
                result = harness.catch_up(
                    _contender(name), round_no, topic, events, lambda _n: None
                )
                runs[name].append(result)
                print(f"round {round_no}: {name}: {result.rate or 0:,.0f} events/s", flush=True)
        for name in names:
            print(f"latency {name} at {rate:,.0f}/s", flush=True)
            for step in harness.latency(_contender(name), rate, (1.0,), 10.0, 3.0, lambda _s: None):
                steps[name] = step
    finally:
        harness.delete_topics()
        harness.close()
    return runs, steps


def report(
    runs: dict[str, list[RunResult]], steps: dict[str, LatencyStep], machine: str, cmd: str
) -> str:
    first = next(iter(runs))  # the ratios are to the first variant run (defaults, usually)
    base = statistics.mean(r.rate or 0.0 for r in runs[first]) or 1.0
    lines = [
        f"# Worker settings, one at a time ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {machine}",
        "",
        f"Command: `{cmd}`",
        "",
        f"| variant | what differs | catch-up events/s (mean, min - max) | vs {first} "
        "| CPU s / M events | broker CPU s / M events | offered/s | p50 ms | p99 ms | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in runs:
        description = VARIANTS[name][0]
        rates = [r.rate or 0.0 for r in runs[name]]
        cpus = [r.cpu_per_million for r in runs[name] if r.cpu_per_million]
        broker = [x for r in runs[name] if not math.isnan(x := r.broker_cpu_per_million)]
        step = steps.get(name)
        s = step.summary if step is not None else None
        note = (step.error or "") if step is not None else "no latency step"
        if step is not None and step.delivered and step.delivered < 0.95 * step.offered:
            note = f"did not keep up: {step.delivered:,.0f}/s delivered"
        lines.append(
            f"| {name} | {description} | {statistics.mean(rates):,.0f} "
            f"({min(rates):,.0f} - {max(rates):,.0f}) | {statistics.mean(rates) / base:.2f}x | "
            f"{statistics.mean(cpus) if cpus else float('nan'):.1f} | "
            f"{statistics.mean(broker) if broker else float('nan'):.1f} | "
            f"{step.offered if step else 0:,.0f} | "
            f"{s.p50 if s else float('nan'):.1f} | {s.p99 if s else float('nan'):.1f} | "
            f"{note} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=66_000.0, help="offered in the latency step")
    parser.add_argument("--model", default="tabular", help="tabular, heavy or an ONNX file")
    parser.add_argument(
        "--variants", type=lambda v: v.split(","), default=list(VARIANTS), help="comma-separated"
    )
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--warmup", type=float, default=45.0, help="seconds of untimed runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    cmd = (
        f"python benchmarks/tuning.py --model {args.model} --events {args.events} "
        f"--rounds {args.rounds} --rate {args.rate:g} --variants {','.join(args.variants)}"
    )
    with tempfile.TemporaryDirectory(prefix="tuning-") as tmp:
        work = Path(tmp)
        with bench_broker(args.bootstrap, work) as broker:
            runs, steps = run(broker.bootstrap, broker.pid, work, args)
            own = broker.pid is not None
            machine = machine_line(describe_machine(broker.bootstrap, own, broker.storage))
    text = report(runs, steps, machine, cmd)
    out = args.out or Path(__file__).parent / "results" / f"{datetime.date.today()}-tuning.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
