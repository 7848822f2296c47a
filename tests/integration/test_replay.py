"""``stream-infer dlq replay`` on the real broker: each dead letter replayed once, kills included.

The replay runs as its own process (the CLI), the worker on a thread; every
count is read back with ``read_committed``, the way the worker reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from stream_infer.config import Settings
from stream_infer.ops.lag import group_lag
from tests.cli import run_cli
from tests.integration.conftest import (
    ROOT,
    events,
    read,
    running,
    send,
    topic_size,
    wait_for,
    write_config,
)

T0 = 1_764_000_000_000


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("dlq", "replay", "--config", str(config), *args)


def _replay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = _cli(config, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _summary(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


def _replayed(kafka: str, topic: str, expected: int) -> Counter[str]:
    """Keys of the replayed events in ``topic`` (read_committed), with their counts."""
    records = read(kafka, topic, expected, timeout=30)
    return Counter(r["key"] for r in records if "dlq.replay.count" in r["headers"])


def _committed(kafka: str, group: str, topic: str) -> int:
    """The replay group's committed offsets, summed over the partitions.

    Read with read_uncommitted: a read_committed client asks for stable offsets
    and waits while a transaction with offsets is open, as one always is here.
    """
    client = Consumer(
        {"bootstrap.servers": kafka, "group.id": group, "isolation.level": "read_uncommitted"}
    )
    try:
        partitions = client.list_topics(topic, timeout=10).topics[topic].partitions
        tps = client.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(0, tp.offset) for tp in tps)
    finally:
        client.close()


def _width3(settings: Settings, model: Path) -> Settings:
    """The same worker (topics, group) with the fixed model."""
    return settings.model_copy(
        update={"model": settings.model.model_copy(update={"path": str(model)})}
    )


def _dead_letters_from_a_bad_model(kafka: str, settings: Settings, n: int) -> list[bytes]:
    """``n`` events of width 3 sent to a worker whose model takes 4: all dead-lettered."""
    keys, values = events(n, width=3)
    send(kafka, settings.topics.inputs[0], values, keys)  # type: ignore[arg-type]
    with running(settings):
        dead = read(kafka, settings.topics.dead_letter, n)
    assert len(dead) == n
    assert {r["headers"]["dlq.error.stage"] for r in dead} == {"validate"}
    return keys


def _assert_each_predicted_once(kafka: str, settings: Settings, n: int) -> None:
    predictions = read(kafka, settings.topics.output, n)
    ids = Counter(r["value"]["id"] for r in predictions)
    assert set(ids) == set(range(n)), sorted(set(range(n)) - set(ids))[:10]
    assert max(ids.values()) == 1, [i for i, c in ids.items() if c > 1][:10]


def test_events_the_model_did_not_fit_are_predicted_once_after_the_fix(
    kafka, make_settings, make_model: Callable[..., Path], tmp_path: Path
) -> None:
    settings = make_settings(make_model("linear", 4), partitions=2)
    n = 40
    keys = _dead_letters_from_a_bad_model(kafka, settings, n)
    fixed = _width3(settings, make_model("linear", 3))
    config = write_config(fixed, tmp_path / "fixed.yaml")
    with running(fixed):
        first = _replay(config)
        assert _summary(first) == f"replayed {n}, parked 0, skipped 0"
        _assert_each_predicted_once(kafka, fixed, n)
        again = _replay(config)
        assert _summary(again) == "replayed 0, parked 0, skipped 0"
    replayed = _replayed(kafka, fixed.topics.inputs[0], 2 * n)
    assert replayed == Counter({k.decode(): 1 for k in keys})
    _assert_each_predicted_once(kafka, fixed, n)


@pytest.mark.slow
def test_a_replay_killed_midway_and_run_again_replays_each_event_once(
    kafka, make_settings, make_model: Callable[..., Path], tmp_path: Path
) -> None:
    settings = make_settings(make_model("linear", 4), partitions=2, dlq={"transaction_ms": 200})
    n = 60
    keys = _dead_letters_from_a_bad_model(kafka, settings, n)
    fixed = _width3(settings, make_model("linear", 3))
    config = write_config(fixed, tmp_path / "fixed.yaml")
    group, dlq = fixed.dlq.group(fixed.kafka.group_id), fixed.topics.dead_letter
    with running(fixed) as worker:
        args = ["dlq", "replay", "--config", str(config), "--rate", "10", "--quiet"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_infer", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            wait_for(lambda: _committed(kafka, group, dlq) >= 10, 60, "replay commits", worker)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed_at = _committed(kafka, group, dlq)
        assert 10 <= killed_at < n, "the replay was not killed midway"
        rest = _replay(config)
        assert _summary(rest).startswith(f"replayed {n - killed_at}, parked 0, skipped 0")
        _assert_each_predicted_once(kafka, fixed, n)
    assert _replayed(kafka, fixed.topics.inputs[0], 2 * n) == Counter({k.decode(): 1 for k in keys})
    _assert_each_predicted_once(kafka, fixed, n)


@pytest.mark.slow
def test_a_second_replay_of_the_same_group_fences_the_first(
    kafka, make_settings, make_topic, linear_model: Path, tmp_path: Path
) -> None:
    settings, config = _crafted_settings(make_settings, make_topic, linear_model, tmp_path)
    topic, dlq, n = settings.topics.inputs[0], settings.topics.dead_letter, 40
    _craft(kafka, dlq, 0, [_spec(i, topic) for i in range(n)])
    group = settings.dlq.group(settings.kafka.group_id)
    args = ["dlq", "replay", "--config", str(config), "--rate", "5", "--quiet"]
    first = subprocess.Popen(
        [sys.executable, "-m", "stream_infer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_for(lambda: _committed(kafka, group, dlq) >= 3, 60, "the first replay committing")
        second = _replay(config)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1
    [line] = [x for x in err.splitlines() if x.startswith("stream-infer:")]
    assert f"dlq replay stopped: another replay of group {group} took over" in line
    assert _summary(second).startswith("replayed ")
    assert _replayed(kafka, topic, n) == Counter({f"k{i}": 1 for i in range(n)})


def _craft(kafka: str, dlq: str, partition: int, specs: list[dict[str, Any]]) -> None:
    """Dead letters as the worker writes them, with the given ``dlq.*`` headers."""
    keys, values, headers = [], [], []
    for spec in specs:
        keys.append(spec.pop("key").encode())
        values.append(b'{"features": [1, 2, 3]}')
        headers.append(
            [("trace", b"t")] + [(k, str(v).encode()) for k, v in spec.items() if v is not None]
        )
    send(kafka, dlq, values, keys, headers=headers, partition=partition)  # type: ignore[arg-type]


def _spec(i: int, topic: str, **extra: Any) -> dict[str, Any]:
    inference = i % 3 == 0
    spec = {
        "key": f"k{i}",
        "dlq.original.topic": topic,
        "dlq.original.partition": 0,
        "dlq.original.offset": i,
        "dlq.error.stage": "inference" if inference else "validate",
        "dlq.error.class": "InvalidArgument" if inference else "ValidationError",
        "dlq.failed.at": T0 + i * 1000,
    }
    spec.update(extra)
    return spec


def _crafted_settings(make_settings, make_topic, linear_model: Path, tmp_path: Path) -> Any:
    settings = make_settings(
        linear_model, partitions=1, topics={"dead_letter": make_topic("dlq", 2)}
    )
    return settings, write_config(settings, tmp_path / "c.yaml")


def test_filters_replay_their_subset_and_hold_the_rest_for_later_runs(
    kafka, make_settings, make_topic, linear_model: Path, tmp_path: Path
) -> None:
    settings, config = _crafted_settings(make_settings, make_topic, linear_model, tmp_path)
    topic, dlq = settings.topics.inputs[0], settings.topics.dead_letter
    for p in (0, 1):  # even i in partition 0, odd i in partition 1, at offset i // 2
        _craft(kafka, dlq, p, [_spec(i, topic) for i in range(p, 12, 2)])

    by_time = _replay(
        config, "--stage", "inference", "--since", "2025-11-24T16:00:03Z", "--until", str(T0 + 9000)
    )
    assert (
        _summary(by_time)
        == "replayed 2, parked 0, skipped 10 (unmatched: 10); 10 held for a later run"
    )
    assert _replayed(kafka, topic, 2) == Counter({"k3": 1, "k6": 1})

    # Partition 1 from its offset 3 (i = 7, 9, 11), partition 0 whole; validate only.
    by_offset = _replay(config, "--from-offset", "1:3", "--error-class", "ValidationError")
    assert _summary(by_offset).startswith("replayed 6, parked 0, skipped 4 (unmatched: 4)")
    assert _replayed(kafka, topic, 8) == Counter({f"k{i}": 1 for i in (3, 6, 2, 4, 8, 10, 7, 11)})

    rest = _replay(config)
    assert _summary(rest) == "replayed 4, parked 0, skipped 0"
    assert _replayed(kafka, topic, 12) == Counter({f"k{i}": 1 for i in range(12)})
    assert _summary(_replay(config)) == "replayed 0, parked 0, skipped 0"


def test_skip_unmatched_passes_what_the_filters_leave_out(
    kafka, make_settings, make_topic, linear_model: Path, tmp_path: Path
) -> None:
    settings, config = _crafted_settings(make_settings, make_topic, linear_model, tmp_path)
    topic, dlq = settings.topics.inputs[0], settings.topics.dead_letter
    _craft(kafka, dlq, 0, [_spec(i, topic) for i in range(9)])
    first = _replay(config, "--stage", "inference", "--skip-unmatched", "--to-offset", "5")
    assert _summary(first) == "replayed 2, parked 0, skipped 4 (unmatched: 4)"  # 0 and 3
    # What --to-offset left unread is not passed: offsets 6, 7, 8 remain.
    later = _replay(config)
    assert _summary(later) == "replayed 3, parked 0, skipped 0"
    assert _replayed(kafka, topic, 5) == Counter({f"k{i}": 1 for i in (0, 3, 6, 7, 8)})


def test_dry_run_lists_and_produces_and_commits_nothing(
    kafka, make_settings, make_topic, linear_model: Path, tmp_path: Path
) -> None:
    settings, config = _crafted_settings(make_settings, make_topic, linear_model, tmp_path)
    topic, dlq = settings.topics.inputs[0], settings.topics.dead_letter
    specs = [_spec(i, topic) for i in range(7)]
    specs[5]["dlq.replay.count"] = 3  # parked at the default dlq.max_replays of 3
    specs[6]["dlq.original.topic"] = None
    _craft(kafka, dlq, 0, specs)
    dry = _replay(config, "--dry-run")
    lines = dry.stdout.splitlines()
    assert lines[0] == "would replay 5:"
    examples = f"{dlq}[0]@0 <- {topic}[0]@0, {dlq}[0]@3 <- {topic}[0]@3"
    assert f"  inference InvalidArgument: 2  e.g. {examples}" in lines
    assert any(line.startswith("  validate ValidationError: 3  e.g. ") for line in lines)
    assert "would park 1:" in lines and "would skip 1:" in lines
    assert f"  no dlq.original.topic: 1  e.g. {dlq}[0]@6" in lines
    assert lines[-1] == "dry run: would replay 5, park 1, skip 1 (no dlq.original.topic: 1)"
    assert topic_size(kafka, topic) == 0
    group = settings.dlq.group(settings.kafka.group_id)
    assert [r.committed for r in group_lag({"bootstrap.servers": kafka}, group, [dlq])] == [
        None,
        None,
    ]
    assert _summary(_replay(config)) == (
        "replayed 5, parked 1, skipped 1 (no dlq.original.topic: 1)"
    )


def test_dead_letters_without_a_usable_topic_are_skipped_and_reported(
    kafka, make_settings, make_topic, linear_model: Path, tmp_path: Path
) -> None:
    settings, config = _crafted_settings(make_settings, make_topic, linear_model, tmp_path)
    topic, dlq = settings.topics.inputs[0], settings.topics.dead_letter
    specs = [_spec(i, topic) for i in range(4)]
    specs[1]["dlq.original.topic"] = None
    specs[2]["dlq.original.topic"] = "no-such-topic"
    _craft(kafka, dlq, 1, specs)
    result = _replay(config)
    assert _summary(result) == (
        "replayed 2, parked 0, skipped 2 (no dlq.original.topic: 1, "
        "unknown topic 'no-such-topic': 1); 1 held for a later run"
    )
    assert _replayed(kafka, topic, 2) == Counter({"k0": 1, "k3": 1})
    # The unknown topic is held (it may be created); the orphan is passed for good.
    assert _summary(_replay(config)) == (
        "replayed 0, parked 0, skipped 1 (unknown topic 'no-such-topic': 1); 1 held for a later run"
    )


def test_events_that_keep_failing_are_parked_after_max_replays(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(linear_model, partitions=1, dlq={"max_replays": 2})
    config = write_config(settings, tmp_path / "c.yaml")
    dlq, n = settings.topics.dead_letter, 10
    keys, values = events(n, width=3)  # the model takes 4: every replay fails again
    send(kafka, settings.topics.inputs[0], values, keys)  # type: ignore[arg-type]
    with running(settings):
        wait_for(lambda: topic_size(kafka, dlq) >= n, 60, "the first dead letters")
        for round_ in (1, 2):
            assert _summary(_replay(config)) == f"replayed {n}, parked 0, skipped 0"
            want = n * (round_ + 1)
            wait_for(lambda w=want: topic_size(kafka, dlq) >= w, 60, "dead letters again")
        dry = _replay(config, "--dry-run")
        assert "would park 10:" in dry.stdout.splitlines()
        assert _summary(dry) == "dry run: would replay 0, park 10, skip 0"
        parked = _replay(config)
        assert _summary(parked) == "replayed 0, parked 10, skipped 0"
    dead = read(kafka, dlq, 3 * n)
    assert len(dead) == 3 * n
    counts = Counter(r["headers"].get("dlq.replay.count", "0") for r in dead)
    assert counts == Counter({"0": n, "1": n, "2": n})
    assert _replayed(kafka, settings.topics.inputs[0], 3 * n) == Counter(
        {k.decode(): 2 for k in keys}
    )


def test_usage_and_cluster_errors_are_one_clear_line(
    kafka, make_settings, make_topic, linear_model: Path, tmp_path: Path
) -> None:
    settings, config = _crafted_settings(make_settings, make_topic, linear_model, tmp_path)
    for args, words in (
        (["--stage", "model"], "'model' is not one of decode, validate, inference, produce"),
        (["--since", "last tuesday"], "neither epoch milliseconds nor an ISO-8601 time"),
        (["--from-offset", "1:x"], "'1:x' is not OFFSET or PARTITION:OFFSET"),
        (["--since", "2000", "--until", "1000"], "must be after --since"),
        (["--dry-run", "--follow"], "a dry run cannot follow"),
        (["--max-replays", "0"], "must be at least 1"),
    ):
        result = _cli(config, *args)
        assert result.returncode == 2, args
        [line] = result.stderr.splitlines()
        assert line.startswith("stream-infer: usage error: --") and words in line, line
    missing = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"dead_letter": "no-such-dlq"})}
    )
    result = _cli(write_config(missing, tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "stream-infer: error: dead-letter topic 'no-such-dlq' does not exist"
    )
