"""Running things: one worker (either runtime), the whole local demo, the benchmark."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from stream_infer.cli.common import ConfigOpt, app, parsed, settings_from

__all__ = ["bench", "dev", "run", "tune_gc"]


def tune_gc() -> None:
    """Collect the youngest generation every 50,000 allocations instead of 700.

    Decoding makes a dict, a list and a float per number of every event, all
    freed by reference counting; the cyclic collector only rescans them.
    Measured on 512-event batches of 12 features with a worker-sized heap:
    decoding took 0.85 µs an event instead of 1.0. The worker process is
    ours, so the setting is made here, never in the library classes.
    """
    import gc

    gc.freeze()  # what start-up loaded (modules, the model) is never collected again
    gc.set_threshold(50_000, 20, 100)


@app.command()
def run(
    config: ConfigOpt = None,
    runtime: Annotated[
        Literal["native", "faust"],
        typer.Option(
            help="native: the confluent-kafka loop; faust: a Faust agent (faust-streaming)."
        ),
    ] = "native",
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes in this container, each its own group member "
            "(metrics on port, port+1, ...; a set worker_id gets -0, -1, ...).",
        ),
    ] = 1,
) -> None:
    """Run one worker: consume, infer, produce predictions and dead letters, commit.

    Gives up with one line when Kafka does not answer within 60 s.
    """
    settings = settings_from(config)
    if processes > 1:
        from stream_infer.runtimes.processes import run_processes

        stop_s = settings.processing.shutdown_timeout_s + 10  # the children's own limit first
        code = parsed(
            "--processes",
            lambda n: run_processes(settings, n, config, runtime, stop_s),
            processes,
        )
        raise typer.Exit(code)
    worker: Any
    if runtime == "faust":
        from stream_infer.runtimes.faust import FaustWorker

        worker = FaustWorker(settings, exit_on_overrun=True)
    else:
        from stream_infer.runtimes.worker import Worker

        worker = Worker(settings)
    tune_gc()
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(128 + signum)  # second signal: the operator means it
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()


@app.command()
def dev(
    config: ConfigOpt = None,
    rate: Annotated[float, typer.Option(help="Demo events per second.")] = 200.0,
    duration: Annotated[
        float, typer.Option(help="Stop after this many seconds (0: Ctrl-C).")
    ] = 0.0,
    poison_every: Annotated[
        int,
        typer.Option(help="Send one undecodable event every N (0: none), to show dead letters."),
    ] = 250,
    keep_broker: Annotated[
        bool, typer.Option("--keep-broker", help="Leave the broker running on exit.")
    ] = False,
) -> None:
    """Everything locally: broker, topics, demo model, worker and demo producer.

    Ctrl-C, SIGTERM or SIGHUP stop it all (the broker too, unless --keep-broker)
    and print the totals; exit code 0. A second signal exits at once.
    """
    from stream_infer.tools.devloop import run_dev

    settings = settings_from(config)
    run_dev(
        settings,
        rate=rate,
        duration=duration,
        poison_every=poison_every,
        keep_broker=keep_broker,
        config=config,
    )


def _cpu_list(text: str) -> frozenset[int]:
    try:
        cpus = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"expected CPU numbers separated by commas, got {text!r}") from None
    if not cpus or min(cpus) < 0:
        raise ValueError(f"expected CPU numbers separated by commas, got {text!r}")
    return cpus


@app.command()
def bench(
    model: Annotated[
        str, typer.Option(help="ONNX file, or a built-in: tabular (12 features), heavy.")
    ] = "tabular",
    quick: Annotated[bool, typer.Option(help="Under a minute: fewer events, one round.")] = False,
    events: Annotated[int | None, typer.Option(min=1000, help="Pre-filled events.")] = None,
    repeats: Annotated[int | None, typer.Option(min=1, help="Rounds of catch-up runs.")] = None,
    contenders: Annotated[str | None, typer.Option(help="Comma-separated (default: all).")] = None,
    out: Annotated[Path | None, typer.Option(help="Results folder.")] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Use this broker (HOST:PORT) instead of starting one.")
    ] = None,
    profile: Annotated[bool, typer.Option(help="Also profile the worker with py-spy.")] = False,
    warmup: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds of untimed runs first (default 45, --quick 0)."),
    ] = None,
    contender_cpus: Annotated[
        str | None,
        typer.Option(
            help="Run the contenders on these CPUs (e.g. 1 or 2,3), the broker and the "
            "harness on the others."
        ),
    ] = None,
    broker_on_disk: Annotated[
        bool, typer.Option(help="Keep the bench's broker log on disk even where tmpfs has room.")
    ] = False,
) -> None:
    """Benchmark the worker against hand-written loops; see README, Benchmark."""
    from stream_infer.tools.bench import BenchOptions, parse_contenders, run_bench

    names = parsed("--contenders", parse_contenders, contenders)
    command = " ".join(["stream-infer", *sys.argv[1:]])
    cpus = parsed("--contender-cpus", _cpu_list, contender_cpus) if contender_cpus else None
    options = BenchOptions(
        model, quick, events, repeats, names, out, bootstrap, profile, command, warmup, cpus,
        broker_on_disk,
    )  # fmt: skip
    raise typer.Exit(run_bench(options))
