"""``stream-infer run --processes N`` on the real broker: N group members, one container's fate."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from confluent_kafka.admin import AdminClient

from stream_infer.config import Settings
from stream_infer.ops.lag import group_lag
from tests.integration.conftest import (
    events,
    process_config,
    send,
    topic_size,
    wait_for,
    wait_for_log,
    worker_process,
)

_PIDS = re.compile(r"started 2 worker processes \(pids (\d+), (\d+)\)")


_ADMINS: dict[str, AdminClient] = {}


def _members(kafka: str, group: str) -> dict[str, set[int]]:
    """Each member (its group.instance.id, else its member id) -> the partitions it holds."""
    admin = _ADMINS.setdefault(kafka, AdminClient({"bootstrap.servers": kafka}))
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        m.group_instance_id or m.member_id: {tp.partition for tp in m.assignment.topic_partitions}
        for m in desc.members
    }


def _gone(pid: int) -> bool:
    """Ended (an orphan's zombie, until whoever adopted it reaps it, counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _pids(log: Path) -> tuple[int, int]:
    wait_for_log(log, "started 2 worker processes")
    found = _PIDS.search(log.read_text())
    assert found, log.read_text()[-2000:]
    return int(found.group(1)), int(found.group(2))


@contextmanager
def _two_members(
    kafka: str, settings: Settings, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path, tuple[int, int]]]:
    """``run --processes 2`` (dynamic members) once both joined: parent, log, child pids."""
    config = process_config(settings, tmp_path / "w.yaml", 0, None)
    log = tmp_path / "w.log"
    with worker_process(config, log, "native", "--processes", "2") as parent:
        pids = _pids(log)
        wait_for(lambda: len(_members(kafka, settings.kafka.group_id)) == 2, 60, "two members")
        yield parent, log, pids


def test_two_processes_share_the_partitions_and_stop_together(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(linear_model, partitions=6)
    group, n = settings.kafka.group_id, 3_000
    config = process_config(settings, tmp_path / "w.yaml", 0, "box")
    log = tmp_path / "w.log"
    keys, values = events(n)
    with worker_process(config, log, "native", "--processes", "2") as parent:
        pids = _pids(log)

        def shared() -> bool:
            held = _members(kafka, group)
            return (
                len(held) == 2
                and all(held.values())
                and set().union(*held.values()) == set(range(6))
            )

        wait_for(shared, 60, "both processes to hold partitions")
        # A chosen worker_id becomes one static id per process, so they never fence each other.
        assert set(_members(kafka, group)) == {"box-0", "box-1"}
        send(kafka, settings.topics.inputs[0], values, keys)
        wait_for(lambda: topic_size(kafka, settings.topics.output) >= n, 60, "all predictions")
        started = time.monotonic()
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert time.monotonic() - started < 40
    assert all(_gone(pid) for pid in pids)
    assert topic_size(kafka, settings.topics.output) == n  # each input answered once
    lag = group_lag({"bootstrap.servers": kafka}, group, settings.topics.inputs)
    assert [p.lag for p in lag] == [0] * 6, lag


def test_one_process_killed_ends_the_container_with_its_code(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    with _two_members(kafka, make_settings(linear_model, partitions=2), tmp_path) as run:
        parent, log, (first, second) = run
        os.kill(first, signal.SIGKILL)
        code = parent.wait(60)
    assert code == 128 + signal.SIGKILL, log.read_text()[-3000:]
    assert "ended with code 137; stopping the others" in log.read_text()
    assert _gone(second)


def test_the_parent_killed_outright_still_stops_its_workers(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    with _two_members(kafka, make_settings(linear_model, partitions=2), tmp_path) as run:
        parent, log, pids = run
        parent.kill()
        parent.wait(10)
        # Each child got the parent-death SIGTERM: a graceful stop, not an orphan.
        wait_for(lambda: all(_gone(pid) for pid in pids), 40, "the workers to stop")
    assert log.read_text().count("stopped in") == 2, log.read_text()[-3000:]
