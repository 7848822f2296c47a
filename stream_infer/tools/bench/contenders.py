"""What the benchmark compares: each contender is a command line, run as its own process.

The harness knows a contender only by the command that starts it, where its outputs carry
the input's time, and how many events it gets; it never imports what it measures. Adding
one is one entry in ``CONTENDERS``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

__all__ = [
    "CONTENDERS",
    "QUICK_LATENCY",
    "Contender",
    "Target",
    "events_for",
    "parse_contenders",
    "rotated",
    "worker_contender",
]


@dataclass(frozen=True)
class Target:
    """Where one run of a contender reads and writes."""

    bootstrap: str
    input: str
    output: str
    dead_letter: str
    group: str
    model: Path
    work: Path  # a folder of its own (configs, Faust's data dir)
    events: int  # what it is given (the ort contender: rows to time)


@dataclass(frozen=True)
class Contender:
    name: str
    description: str
    argv: Callable[[Target], list[str]]
    kafka: bool = True  # False: no broker; it prints its own figures (ort)
    event_time: Literal["json", "timestamp"] = "json"  # "event_time_ms" in the value, or CreateTime
    scale: float = 1.0  # its share of --events (the tutorial loop is slow)
    min_events: int = 0
    members: int = 1  # consumer-group members it runs (``run --processes N``: N)


def worker_contender(
    name: str,
    description: str,
    guarantee: str = "at_least_once",
    runtime: str = "native",
    scale: float = 1.0,
    overrides: dict[str, dict[str, object]] | None = None,
    processes: int = 1,
) -> Contender:
    """A stream-infer worker with default settings but for topics, group and a free metrics port.

    ``overrides``: settings by section (``{"model": {"concurrent_batches": 1}}``), for
    scripts that measure one setting against the defaults (``benchmarks/tuning.py``).
    """

    def argv(t: Target) -> list[str]:
        config: dict[str, dict[str, object]] = {
            "kafka": {"bootstrap_servers": t.bootstrap, "group_id": t.group},
            "topics": {"inputs": [t.input], "output": t.output, "dead_letter": t.dead_letter},
            "model": {"path": str(t.model)},
            "metrics": {"port": 0},
        }
        for section, values in (overrides or {}).items():
            config.setdefault(section, {}).update(values)
        if guarantee != "at_least_once":
            config["processing"] = {"guarantee": guarantee}
        path = t.work / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [sys.executable, "-m", "stream_infer", "run", "--config", str(path)]
        if processes > 1:
            cmd += ["--processes", str(processes)]
        return cmd + (["--runtime", runtime] if runtime != "native" else [])

    return Contender(
        name,
        description,
        argv,
        scale=scale,
        min_events=2000 if scale < 1 else 0,
        members=processes,
    )


def _loop(name: str) -> Callable[[Target], list[str]]:
    def argv(t: Target) -> list[str]:
        return [
            sys.executable, "-m", "stream_infer.tools.bench.loops", name,
            "--bootstrap", t.bootstrap, "--input", t.input, "--output", t.output,
            "--group", t.group, "--model", str(t.model), "--rows", str(t.events),
        ]  # fmt: skip

    return argv


def _faust_agent(model: bool) -> Callable[[Target], list[str]]:
    def argv(t: Target) -> list[str]:
        return [
            sys.executable, "-m", "stream_infer.tools.bench.faust_agent",
            "--bootstrap", t.bootstrap, "--input", t.input, "--output", t.output,
            "--group", t.group, "--data-dir", str(t.work / "faust"),
        ] + (["--model", str(t.model)] if model else [])  # fmt: skip

    return argv


_ALL = [
    worker_contender("stream-infer", "`stream-infer run`, default settings (at least once)"),
    worker_contender(
        "stream-infer-eos",
        "`stream-infer run` with `processing.guarantee: exactly_once`",
        guarantee="exactly_once",
    ),
    worker_contender(
        "stream-infer-2p",
        "`stream-infer run --processes 2`: two workers (group members) in one container",
        processes=2,
    ),
    worker_contender(
        "stream-infer-faust",
        "`stream-infer run --runtime faust` (the same pipeline in a Faust agent), defaults",
        runtime="faust",
        scale=0.1,
    ),
    Contender(
        "bare",
        "confluent-kafka consume 512 -> produce each value as is; no decoding, no model, "
        "auto-commit",
        _loop("bare"),
        event_time="timestamp",
    ),
    Contender(
        "tutorial",
        "poll one, json.loads, predict one row, produce, flush, commit (sync) per message",
        _loop("tutorial"),
        scale=0.005,
        min_events=200,
    ),
    Contender(
        "hand-batched",
        "consume 512, json.loads each, one onnxruntime call, produce, flush, commit per batch",
        _loop("hand-batched"),
    ),
    Contender(
        "faust-batched",
        "plain Faust agent, stream.take_events(512, within=0.01), one onnxruntime call per "
        "batch, one prediction sent per event",
        _faust_agent(model=True),
        scale=0.1,
        min_events=2000,
    ),
    Contender(
        "faust-echo",
        "plain Faust agent, stream.take_events(512, within=0.01), a small JSON per event; no model",
        _faust_agent(model=False),
        scale=0.1,
        min_events=2000,
    ),
    Contender(
        "ort",
        "onnxruntime alone on pre-built arrays, batches of 512, no Kafka (the model's ceiling)",
        _loop("ort"),
        kafka=False,
    ),
]
CONTENDERS: dict[str, Contender] = {c.name: c for c in _ALL}
# The contenders whose latency --quick measures (when they are in the run).
QUICK_LATENCY = ("stream-infer", "stream-infer-2p", "bare")


def parse_contenders(text: str | None) -> list[str]:
    """``a,b,c`` -> names, checked; ``None`` -> all of them."""
    if text is None:
        return list(CONTENDERS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("name at least one contender")
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender {', '.join(unknown)} (known: {', '.join(CONTENDERS)})")
    if len(set(names)) != len(names):
        raise ValueError("a contender is named twice")
    return names


def events_for(contender: Contender, events: int) -> int:
    """How many of the pre-filled events this contender is given."""
    return min(events, max(contender.min_events, round(events * contender.scale)))


def rotated(names: Sequence[str], round_no: int) -> list[str]:
    """Round r starts with the r-th contender, so none always runs first (or last)."""
    k = round_no % len(names) if names else 0
    return [*names[k:], *names[:k]]
