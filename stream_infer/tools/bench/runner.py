"""``stream-infer bench``: plan the run, drive the harness with a progress bar, write results."""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_infer.errors import StreamInferError
from stream_infer.tools.bench.broker import BenchBroker, bench_broker
from stream_infer.tools.bench.contenders import CONTENDERS, QUICK_LATENCY, events_for, rotated
from stream_infer.tools.bench.harness import PARTITIONS, Harness, RunResult
from stream_infer.tools.bench.latency import LatencyStep

__all__ = ["BenchOptions", "run_bench"]

FULL_EVENTS, QUICK_EVENTS = 500_000, 10_000
LOADS = (0.5, 0.8)


@dataclass
class BenchOptions:
    model: str = "tabular"
    quick: bool = False
    events: int | None = None
    repeats: int | None = None
    contenders: list[str] | None = None
    out: Path | None = None
    bootstrap: str | None = None
    profile: bool = False
    command: str = "stream-infer bench"
    warmup: float | None = None
    contender_cpus: frozenset[int] | None = None  # the rest run the broker and the harness
    broker_on_disk: bool = False  # the bench's broker logs to disk even where tmpfs has room

    @property
    def n_events(self) -> int:
        return self.events or (QUICK_EVENTS if self.quick else FULL_EVENTS)

    @property
    def n_repeats(self) -> int:
        return self.repeats or (1 if self.quick else 3)

    @property
    def warmup_s(self) -> float:
        """Seconds of untimed runs before the first measured one (see ``_Session.warm_up``)."""
        if self.warmup is not None:
            return self.warmup
        return 0.0 if self.quick else 45.0

    @property
    def latency_s(self) -> float:
        """Seconds measured per offered rate."""
        return 2.0 if self.quick else 10.0

    @property
    def settle_s(self) -> float:
        """Seconds at each rate before measuring: the contender adapts to the new rate."""
        return 1.0 if self.quick else 3.0

    @property
    def names(self) -> list[str]:
        return self.contenders or list(CONTENDERS)

    @property
    def latency_names(self) -> list[str]:
        return [
            n for n in self.names if CONTENDERS[n].kafka and (not self.quick or n in QUICK_LATENCY)
        ]


def _require_extras() -> None:
    missing = []
    for module in ("psutil", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise StreamInferError(
            f"bench needs {' and '.join(missing)}: pip install 'stream-infer[bench]'"
        )


def _split_cpus(contender: frozenset[int] | None) -> frozenset[int] | None:
    """The CPUs left for the broker, the harness and the load generator; None: no pinning."""
    if not contender:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise StreamInferError("--contender-cpus needs CPU affinity (Linux)")
    usable = frozenset(os.sched_getaffinity(0))
    if not contender <= usable:
        raise StreamInferError(
            f"--contender-cpus: CPU(s) {', '.join(map(str, sorted(contender - usable)))} "
            f"are not among this process's ({', '.join(map(str, sorted(usable)))})"
        )
    if contender == usable:
        raise StreamInferError(
            "--contender-cpus: leave at least one CPU for the broker and the harness"
        )
    return usable - contender


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def run_bench(opts: BenchOptions) -> int:
    """Run everything, write the results; 0, or 1 when a run failed (the results say which)."""
    _require_extras()
    from stream_infer.tools.bench.harness import Harness
    from stream_infer.tools.bench.models import resolve_model

    others = _split_cpus(opts.contender_cpus)
    date = datetime.date.today().isoformat()
    out = opts.out or Path("benchmarks/results") / f"{date}-bench"
    work = Path(tempfile.mkdtemp(prefix="stream-infer-bench-"))
    run_id = uuid.uuid4().hex[:8]
    try:  # a bad --model fails before a broker starts or a folder is made
        model = resolve_model(opts.model, work)
        out.mkdir(parents=True, exist_ok=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if others:
        # Before the broker starts and before any thread does: everything started from
        # here on (the broker, the load generator, the reader) inherits the other cores.
        os.sched_setaffinity(0, others)
    with bench_broker(opts.bootstrap, work, opts.broker_on_disk) as broker, _progress() as bar:
        bootstrap = broker.bootstrap
        bar.console.print(f"bench {run_id}: broker {bootstrap}, work folder {work}")
        harness = Harness(bootstrap, model.path, work, run_id, broker.pid, opts.contender_cpus)
        session = _Session(opts, harness, bar)
        try:
            session.catch_up()
            session.latency()
            if opts.profile:
                session.profile(out)
        finally:
            if opts.bootstrap:
                session.harness.delete_topics()
            session.harness.close()
    doc = _document(opts, date, broker, model.as_dict(), session)
    _write(doc, out)
    failed = [r for r in session.runs if r.error] + [s for s in session.steps if s.error]
    say = bar.console.print
    if failed:
        say(f"{len(failed)} run(s) failed; contender logs are kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    say(f"results written to {out}")
    return 1 if failed else 0


class _Session:
    """The phases of one run, reporting to the progress bar as they go."""

    def __init__(self, opts: BenchOptions, harness: Harness, bar: Any) -> None:
        self.opts, self.harness, self.bar = opts, harness, bar
        self.say = bar.console.print
        self.runs: list[RunResult] = []
        self.steps: list[LatencyStep] = []
        self.profile_doc: dict[str, Any] | None = None
        self.warmup_runs: list[float] = []  # events/s of each untimed run
        self.warmup_latency: dict[str, Any] | None = None  # the untimed latency step
        self.source = ""

    def _task(self, what: str, total: int) -> tuple[Any, Callable[[int], None]]:
        task = self.bar.add_task(what, total=total)

        def progress(n: int) -> None:
            self.bar.update(task, completed=n)

        return task, progress

    def catch_up(self) -> None:
        opts, harness = self.opts, self.harness
        self.source = harness.topic("in")
        task, progress = self._task("pre-filling the input topic", opts.n_events)
        harness.fill(self.source, opts.n_events, progress)
        self.bar.remove_task(task)
        self.warm_up()
        for r in range(opts.n_repeats):
            for name in rotated(opts.names, r):
                c = CONTENDERS[name]
                what = f"round {r + 1}/{opts.n_repeats}: {name}"
                task, progress = self._task(what, events_for(c, opts.n_events))
                result = harness.catch_up(c, r, self.source, opts.n_events, progress)
                self.bar.remove_task(task)
                self.runs.append(result)
                figure = f"{result.rate:,.0f} events/s" if not result.error else "FAILED"
                self.say(f"{what}: {figure}" + (f": {result.error}" if result.error else ""))

    def warm_up(self) -> None:
        """Untimed runs of the worker (else the first Kafka contender): ``Harness.warm_up``."""
        kafka = [n for n in self.opts.names if CONTENDERS[n].kafka]
        if self.opts.warmup_s <= 0 or not kafka:
            return
        c = CONTENDERS["stream-infer" if "stream-infer" in kafka else kafka[0]]
        what = f"warming up the broker: {c.name}"
        task, progress = self._task(what, events_for(c, self.opts.n_events))
        opts = self.opts
        runs = self.harness.warm_up(c, self.source, opts.n_events, opts.warmup_s, progress)
        self.bar.remove_task(task)
        self.warmup_runs = [r.rate for r in runs]
        if runs[-1].error:
            self.say(f"{what}: {runs[-1].error}")
        self.say(f"warm-up: {len(runs)} untimed run(s) of {c.name}, not counted")

    def _mean_rate(self, name: str) -> float | None:
        """The contender's mean catch-up rate over its runs that did not fail."""
        rates = [x.rate for x in self.runs if x.contender == name and x.error is None]
        return sum(rates) / len(rates) if rates else None

    def warm_latency(self) -> None:
        """One untimed step at 80% of the first latency contender's rate, as long as a step.

        Catch-up warms the broker's paths for large fetches and produce batches; an
        open-loop producer's many small batches and fetches at the log's end reach other
        code, which a broker compiles when they first run. Without this step the first
        contender measured paid for it: p99 of 135 ms in its first 3 s, against 38 ms in
        the next step's (bench-v4).
        """
        if self.opts.warmup_s <= 0:
            return
        for name in self.opts.latency_names:
            rate = self._mean_rate(name)
            if rate is None:
                continue
            task = self.bar.add_task(f"warming up the broker: {name} under load", total=1)
            opts = self.opts
            steps = self.harness.latency(
                CONTENDERS[name], rate, (0.8,), opts.latency_s, opts.settle_s, lambda _s: None
            )
            for step in steps:
                self.warmup_latency = step.as_dict()
            self.bar.remove_task(task)
            return

    def latency(self) -> None:
        self.warm_latency()
        for name in self.opts.latency_names:
            top = self._mean_rate(name)
            if top is None:
                continue
            task = self.bar.add_task(f"latency: {name}", total=len(LOADS))

            def on_step(what: str, task: Any = task, name: str = name) -> None:
                self.bar.update(task, description=f"latency {name}: {what}")

            c = CONTENDERS[name]
            lat, settle = self.opts.latency_s, self.opts.settle_s
            for step in self.harness.latency(c, top, LOADS, lat, settle, on_step):
                self.steps.append(step)
                self.bar.advance(task)
                p = step.summary
                self.say(
                    f"latency {name} at {step.load:.0%} ({step.offered:,.0f}/s): "
                    + (f"p50 {p.p50:.1f} ms, p99 {p.p99:.1f} ms" if p and p.count else "-")
                    + (f" ({step.error})" if step.error else "")
                )
            self.bar.remove_task(task)

    def profile(self, out: Path) -> None:
        from stream_infer.tools.bench.profile import attach_py_spy, summarize_speedscope

        c, n = CONTENDERS["stream-infer"], self.opts.n_events
        speedscope = out / "profile-stream-infer.speedscope.json"
        task, progress = self._task("profiling stream-infer (py-spy)", n)
        attach = attach_py_spy(speedscope)
        result = self.harness.catch_up(c, 0, self.source, n, progress, attach)
        self.bar.remove_task(task)
        summary = out / "profile-stream-infer.md"
        figure = f"{result.rate:,.0f} events/s under the profiler" if not result.error else ""
        head = (
            "# Profile of the stream-infer worker (py-spy)\n\n"
            f"One extra catch-up run of {result.events:,} events, not counted in the results: "
            f"{figure or result.error}. py-spy attached at the first output, so start-up is "
            "not in it.\n\n"
        )
        body = summarize_speedscope(speedscope) if speedscope.is_file() else "No profile.\n"
        summary.write_text(head + body)
        self.say(f"profile: {summary} (and {speedscope.name}, for speedscope.app)")
        self.profile_doc = {
            "speedscope": speedscope.name,
            "summary": summary.name,
            "run": result.as_dict(),
        }


def _document(
    opts: BenchOptions, date: str, broker: BenchBroker, model: dict[str, Any], session: _Session
) -> dict[str, Any]:
    from stream_infer.tools.bench.machine import describe_machine
    from stream_infer.tools.bench.report import aggregate

    return {
        "version": 1,
        "date": date,
        "command": opts.command,
        "machine": describe_machine(broker.bootstrap, broker.pid is not None, broker.storage),
        "model": model,
        "settings": {
            "events": opts.n_events,
            "repeats": opts.n_repeats,
            "partitions": PARTITIONS,
            "loads": list(LOADS),
            "latency_s": opts.latency_s,
            "settle_s": opts.settle_s,
            "latency_contenders": opts.latency_names,
            "quick": opts.quick,
            "warmup_s": opts.warmup_s,
            "contender_cpus": sorted(opts.contender_cpus or ()),
            "warmup_runs_per_s": session.warmup_runs,
            "warmup_latency_step": session.warmup_latency,
        },
        **aggregate(opts.names, session.runs, session.steps),
        "profile": session.profile_doc,
    }


def _plain(value: Any) -> Any:
    """NaN (a figure that could not be measured) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _write(doc: dict[str, Any], out: Path) -> None:
    from stream_infer.tools.bench.report import render_markdown, write_plot

    (out / "results.json").write_text(json.dumps(_plain(doc), indent=2, default=str) + "\n")
    markdown = render_markdown(doc)
    (out / "results.md").write_text(markdown)
    write_plot(doc, out / "bench.png")
    print(markdown, end="", flush=True)
