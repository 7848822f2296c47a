"""The harness: a broker, one pre-filled input topic, and every contender in turn.

Catch-up throughput: the input topic is filled before anything runs; each run of a
contender is a fresh process with a consumer group and an output topic of its own,
reading the same events from the same broker. The harness watches the output
topic's last stable offsets (``list_offsets``, ``read_committed``) every 10 ms,
with the process's CPU seconds and resident set, and takes the figures over the
window from 10% to 90% of the outputs (see ``stats.catch_up_window``). Rounds run
the contenders in rotated order, so drift on a shared machine spreads over all.

Latency comes after, per contender, at 50% and 80% of its mean catch-up rate
(see ``latency``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_infer.tools.bench.contenders import (
    Contender,
    Target,
    events_for,
)
from stream_infer.tools.bench.latency import (
    LatencyStep,
    OutputReader,
    delivered_rate,
    offered_load,
)
from stream_infer.tools.bench.process import ContenderFailed, ContenderProcess, cpu_clock
from stream_infer.tools.bench.stats import LatencySummary, Sample, catch_up_window

__all__ = ["PARTITIONS", "Attach", "Harness", "RunResult"]

Attach = Callable[[int], Callable[[], None]]  # pid -> what detaches

PARTITIONS = 6  # as the declared `events` topic: room for the consumer to fetch in parallel
_SAMPLE_S = 0.01
_FIRST_OUTPUT_S = 180.0  # imports, model load, group join: generous on a loaded machine
_STALL_S = 60.0
_WARMUP_EVENTS = 200
_CPU_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


@dataclass
class RunResult:
    """One catch-up run of one contender."""

    contender: str
    round: int
    events: int
    rate: float = math.nan
    cpu_per_million: float = math.nan
    broker_cpu_per_million: float = math.nan  # where the bench started the broker itself
    peak_rss: int = 0
    window_s: float = math.nan
    samples: int = 0
    wall_s: float = math.nan
    load_avg: float = math.nan  # the machine's 1-minute load average as the run ended
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Harness:
    """Topics, processes and measurements against one broker; figures only, no reporting."""

    def __init__(
        self,
        bootstrap: str,
        model: Path,
        work: Path,
        run_id: str,
        broker_pid: int | None = None,
        contender_cpus: frozenset[int] | None = None,
    ) -> None:
        from confluent_kafka.admin import AdminClient

        self.bootstrap = bootstrap
        self._broker_cpu = cpu_clock(broker_pid)
        self.contender_cpus = contender_cpus
        self.model = model
        self.work = work
        self.run_id = run_id
        self.admin: Any = AdminClient({"bootstrap.servers": bootstrap})
        self.created: list[str] = []
        self.offsets_error = ""
        self._seq = 0

    # -- topics ------------------------------------------------------------------------

    def topic(self, role: str, partitions: int = PARTITIONS) -> str:
        from stream_infer.tools.topics import TopicDecl, apply_topics

        name = f"bench-{self.run_id}-{role}"
        apply_topics(
            {"bootstrap.servers": self.bootstrap},
            [TopicDecl(name=name, partitions=partitions, replication_factor=1)],
        )
        self.created.append(name)
        return name

    def fill(self, topic: str, count: int, progress: Callable[[int], None]) -> None:
        """``count`` events shaped for the model, as ``stream-infer produce --count`` sends them."""
        from stream_infer.inference.model import read_signature
        from stream_infer.tools.loadgen import generated_events, produce_events

        conf = {"bootstrap.servers": self.bootstrap, "linger.ms": 20}
        events = generated_events(read_signature(self.model))
        produce_events(conf, topic, events, count=count, progress=progress)

    def delete_topics(self) -> None:
        if not self.created:
            return
        for fut in self.admin.delete_topics(self.created, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result()
        self.created.clear()

    def close(self) -> None:
        """Let go of the admin client before its broker stops (it would log every reconnect)."""
        self.admin = None

    def target(self, c: Contender, input_topic: str, events: int, tag: str) -> Target:
        """Output and dead-letter topics, a group and a work folder for one run of ``c``."""
        self._seq += 1
        key = f"{c.name}-{tag}-{self._seq}"
        work = self.work / key
        work.mkdir(parents=True, exist_ok=True)
        kafka = c.kafka
        return Target(
            bootstrap=self.bootstrap,
            input=input_topic,
            output=self.topic(f"{key}-out") if kafka else "",
            dead_letter=self.topic(f"{key}-dlq", 1) if kafka else "",
            group=f"bench-{self.run_id}-{key}",
            model=self.model,
            work=work,
            events=events,
        )

    # -- catch-up ----------------------------------------------------------------------

    def _count(self, topic: str) -> int | None:
        """Outputs visible in ``topic``; None when the broker could not say this time.

        A topic just created can answer with a transient error (a leader epoch that
        metadata has not caught up with yet): the next sample asks again.
        """
        from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        request = {TopicPartition(topic, p): latest for p in range(PARTITIONS)}
        futures = self.admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=10
        )
        try:
            return sum(int(f.result().offset) for f in futures.values())
        except KafkaException as exc:
            self.offsets_error = str(exc)
            return None

    def catch_up(
        self,
        c: Contender,
        round_no: int,
        input_topic: str,
        events: int,
        progress: Callable[[int], None],
        attach: Attach | None = None,
    ) -> RunResult:
        """One run: start, watch until ``events`` outputs are visible, stop; never raises.

        ``attach`` (a profiler) is called with the process id once the first output is out,
        so that start-up stays out of the profile; what it returns is called at the end.
        """
        n = events_for(c, events)
        result = RunResult(c.name, round_no, n)
        target = self.target(c, input_topic, n, f"r{round_no}")
        argv = c.argv(target)
        began = time.monotonic()
        proc: ContenderProcess | None = None
        detach: list[Callable[[], None]] = []

        def first_output(pid: int) -> None:
            if attach is not None:
                detach.append(attach(pid))

        try:
            proc = ContenderProcess(argv, target.work / "log.txt", self.contender_cpus)
            if not c.kafka:
                self._offline(proc, result)
            else:
                samples = self._watch(proc, target.output, n, progress, first_output)
                window = catch_up_window(samples, n)
                result.rate = window.rate
                # The kernel counts CPU time in clock ticks (10 ms): a window that used only
                # a few of them has no CPU figure worth showing.
                if window.cpu_s >= 5 * _CPU_TICK_S:
                    result.cpu_per_million = window.cpu_per_million
                if window.broker_cpu_s >= 5 * _CPU_TICK_S:
                    result.broker_cpu_per_million = window.broker_cpu_per_million
                result.window_s, result.samples = window.seconds, window.samples
                result.peak_rss = proc.peak_rss()
        except (ContenderFailed, ValueError) as exc:
            result.error = str(exc)
        finally:
            for stop in detach:
                stop()
            if proc is not None:
                proc.stop()
        result.wall_s = time.monotonic() - began
        if hasattr(os, "getloadavg"):
            result.load_avg = os.getloadavg()[0]
        return result

    def warm_up(
        self,
        c: Contender,
        input_topic: str,
        events: int,
        seconds: float,
        progress: Callable[[int], None],
    ) -> list[RunResult]:
        """Untimed catch-up runs of ``c`` for ``seconds`` (at least one; a failed one ends it).

        A broker just started compiles its hot paths as traffic first reaches them: its
        JIT compiler threads took 16 to 23% of a core in the first runs after a start,
        and 2% by the fourth, CPU that the contenders on the same cores lost unequally,
        by their place in the rotation. A broker in service has long done that work.
        """
        runs: list[RunResult] = []
        began = time.monotonic()
        while not runs or (time.monotonic() - began < seconds and not runs[-1].error):
            runs.append(self.catch_up(c, -1, input_topic, events, progress))
        return runs

    def _watch(
        self,
        proc: ContenderProcess,
        output: str,
        n: int,
        progress: Callable[[int], None],
        first_output: Callable[[int], None],
    ) -> list[Sample]:
        started = time.monotonic()
        samples = [Sample(started, 0, proc.cpu_seconds(), proc.rss(), self._broker_cpu())]
        last_change = started
        while samples[-1].count < n:
            time.sleep(_SAMPLE_S)
            count = self._count(output)
            now = time.monotonic()
            proc.check_alive()
            if count is None:
                if now - last_change > _STALL_S:
                    raise ContenderFailed(f"cannot read offsets: {self.offsets_error}")
                continue
            samples.append(Sample(now, count, proc.cpu_seconds(), proc.rss(), self._broker_cpu()))
            progress(min(count, n))
            if count != samples[-2].count:
                if not samples[-2].count:
                    first_output(proc.pid)
                last_change = now
            elif count == 0 and now - started > _FIRST_OUTPUT_S:
                raise ContenderFailed(f"no output within {_FIRST_OUTPUT_S:.0f}s: {proc.tail()}")
            elif count and now - last_change > _STALL_S:
                raise ContenderFailed(
                    f"stalled at {count} of {n} outputs for {_STALL_S:.0f}s: {proc.tail()}"
                )
        return samples

    def _wait_for_members(self, group: str, members: int, proc: ContenderProcess) -> None:
        """Until ``members`` members of ``group`` share every partition, in a stable group.

        A contender of several processes starts them one after the other: the first to
        join takes the warm-up events, and a later one's join would otherwise rebalance
        the group inside a measured step (one run showed a p99 of 2.4 s from it).
        """
        deadline = time.monotonic() + _FIRST_OUTPUT_S
        seen = "no description yet"
        while time.monotonic() < deadline:
            proc.check_alive()
            try:
                described = self.admin.describe_consumer_groups([group], request_timeout=10)
                d = described[group].result()
            except Exception as exc:  # a group still forming can fail to describe: ask again
                seen = str(exc)
            else:
                owned = sum(len(m.assignment.topic_partitions) for m in d.members)
                seen = f"{len(d.members)} member(s), {owned} partition(s), state {d.state}"
                if len(d.members) >= members and owned == PARTITIONS and d.state.name == "STABLE":
                    return
            time.sleep(0.1)
        raise ContenderFailed(f"its {members} group members never shared the input: {seen}")

    @staticmethod
    def _offline(proc: ContenderProcess, result: RunResult) -> None:
        import json

        try:
            proc.popen.wait(300)
        except Exception:
            raise ContenderFailed(f"did not finish within 300s: {proc.tail()}") from None
        if proc.popen.returncode != 0:
            raise ContenderFailed(f"exited with code {proc.popen.returncode}: {proc.tail()}")
        report = json.loads(proc.log.read_text().strip().splitlines()[-1])
        result.rate = report["rate"]
        result.cpu_per_million = report["cpu_s"] / report["rows"] * 1e6
        result.window_s, result.peak_rss = report["seconds"], report["peak_rss"]

    # -- latency -----------------------------------------------------------------------

    def latency(
        self,
        c: Contender,
        max_rate: float,
        loads: tuple[float, ...],
        duration: float,
        settle: float,
        on_step: Callable[[str], None],
    ) -> Iterator[LatencyStep]:
        """Each load in turn against one process of ``c`` on an input topic of its own.

        A step holds its rate for ``settle`` seconds, then ``duration`` seconds measured:
        the settling seconds are summed up on their own (``LatencyStep.settling``), since
        a contender that is slow to reach a new rate shows it there.
        """
        # Unique per call: an untimed step before the measured ones must not leave its
        # events in the measured steps' input (a backlog they would start behind).
        self._seq += 1
        input_topic = self.topic(f"{c.name}-lat-in-{self._seq}")
        target = self.target(c, input_topic, 0, "lat")
        reader = OutputReader(self.bootstrap, target.output, PARTITIONS, c.event_time)
        proc: ContenderProcess | None = None
        steps = [LatencyStep(c.name, load, load * max_rate) for load in loads]
        try:
            proc = ContenderProcess(c.argv(target), target.work / "log.txt", self.contender_cpus)
            on_step("warm-up")
            self.fill(input_topic, _WARMUP_EVENTS, lambda _n: None)
            if not reader.wait_for(_WARMUP_EVENTS, _FIRST_OUTPUT_S, proc.check_alive):
                raise ContenderFailed(f"warm-up events got no outputs: {proc.tail()}")
            if c.members > 1:
                self._wait_for_members(target.group, c.members, proc)
            expected = reader.total
            for step in steps:
                on_step(f"{step.load:.0%} = {step.offered:,.0f}/s")
                with (target.work / "openloop.log").open("ab") as log:
                    sent = offered_load(
                        self.bootstrap, input_topic, str(self.model), step.offered,
                        settle + duration, log,
                    )  # fmt: skip
                step.sent, step.generator_lag_ms = sent["sent"], sent["max_lag_ms"]
                expected += step.sent
                complete = reader.wait_for(expected, 20.0, proc.check_alive)
                measured_from = int(sent["first_ms"] + settle * 1000)
                _, early = reader.latencies(sent["first_ms"], measured_from - 1)
                due, lat = reader.latencies(measured_from, sent["last_ms"])
                step.received = int(reader.total - (expected - step.sent))
                step.settling = LatencySummary.of_micros(early.tolist())
                step.summary = LatencySummary.of_micros(lat.tolist())
                step.delivered = delivered_rate(due, lat)
                if not complete:
                    step.error = f"{expected - reader.total} outputs missing after 20s"
                    expected = reader.total
                yield step
        except ContenderFailed as exc:
            for step in steps:
                if step.summary is None:
                    step.error = str(exc)
                    yield step
        finally:
            if proc is not None:
                proc.stop()
            reader.close()
