"""What a worker and the tools say before any record flows: a missing cluster, a missing
topic, a group that keeps us waiting. Each in one line that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer

from tests.conftest import free_port
from tests.integration.conftest import ROOT, wait_for, wait_for_log, worker_process, write_config
from tests.integration.test_cli import _cli


@pytest.mark.slow
def test_no_broker_gives_one_line_within_the_promised_time(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS": address}
    commands = {  # command -> the time it promises
        "lag": (["lag"], 15.0),
        "consume": (["consume"], 15.0),
        "produce": (["produce", "--demo", "--count", "3"], 15.0),
        "topics apply": (["topics", "apply"], 15.0),
        "run": (["run"], 60.0),
    }
    procs = {}
    for name, (args, _) in commands.items():
        procs[name] = (
            subprocess.Popen(
                [sys.executable, "-m", "stream_infer", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            time.monotonic(),
        )
    for name, (proc, started) in procs.items():
        promise = commands[name][1]
        _out, err = proc.communicate(timeout=promise + 60)
        elapsed = time.monotonic() - started
        lines = err.strip().splitlines()
        naming = [line for line in lines if address in line]
        assert proc.returncode == 1, (name, err[-2000:])
        assert len(naming) == 1, (name, lines)
        assert naming[0] == lines[-1]
        assert naming[0].startswith(f"stream-infer: error: cannot reach Kafka at {address}")
        assert "Connection refused" in naming[0]
        assert not [line for line in lines if "librdkafka" in line], (name, lines)
        if name != "run":
            assert len(lines) == 1, (name, lines)  # the tools say nothing else
        # The promise, plus interpreter start-up (and for run the model's load) on a busy box.
        assert elapsed < promise + (10 if name == "run" else 6), (name, elapsed)
        assert elapsed >= promise - 1, (name, elapsed)  # it did try for as long as it says


def test_following_the_missing_topic_hint_works(kafka, make_settings, linear_model, tmp_path):
    missing = f"nosuchtopic-{os.urandom(4).hex()}"
    settings = make_settings(linear_model, inputs=[missing])
    cfg = write_config(settings, tmp_path / "c.yaml")
    failed = _cli("run", "--config", str(cfg), cwd=tmp_path)
    assert failed.returncode == 1
    line = failed.stderr.strip().splitlines()[-1]
    assert line == (
        f"stream-infer: error: topic does not exist: topics.inputs '{missing}' (declare it in "
        f"topics/{missing}.yaml with its name and partitions, then run `stream-infer topics "
        "apply`)"
    )
    # Do what it says, in the same folder.
    (tmp_path / "topics").mkdir()
    (tmp_path / "topics" / f"{missing}.yaml").write_text(
        yaml.safe_dump({"name": missing, "partitions": 2})
    )
    declared = _cli("run", "--config", str(cfg), cwd=tmp_path)
    last = declared.stderr.strip().splitlines()[-1]
    hint = f"(topics/{missing}.yaml declares it: run `stream-infer topics apply`)"
    assert last.endswith(f"topics.inputs '{missing}' {hint}")
    applied = _cli("topics", "apply", "--config", str(cfg), cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert f"{missing}: created" in applied.stdout
    log = tmp_path / "worker.log"
    with worker_process(cfg, log) as proc:
        wait_for_log(log, f"assigned {missing}[")
        proc.terminate()
        assert proc.wait(60) == 0


def test_topics_apply_says_how_to_declare_a_config_topic(
    kafka, make_settings, linear_model, tmp_path
):
    settings = make_settings(linear_model)
    cfg = write_config(settings, tmp_path / "c.yaml")
    (tmp_path / "topics").mkdir()
    result = _cli("topics", "apply", "--config", str(cfg), "--dir", str(tmp_path / "topics"))
    assert result.returncode == 0, result.stderr
    out = settings.topics.output
    assert (
        f"{out}: warning (used by the config but not declared in {tmp_path / 'topics'}: add "
        f"{tmp_path / 'topics' / (out + '.yaml')} with 'name: {out}' and 'partitions: N', "
        "then run topics apply again)"
    ) in result.stderr.splitlines()


def test_a_worker_says_what_it_waits_for_when_the_group_holds_its_partitions(
    kafka, make_settings, linear_model, tmp_path
):
    settings = make_settings(linear_model, partitions=2)
    holder = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": settings.kafka.group_id,
            "partition.assignment.strategy": "cooperative-sticky",  # as the worker's
            "session.timeout.ms": 6000,
        }
    )
    holder.subscribe(settings.topics.inputs)

    def holds_all() -> bool:
        holder.poll(0.1)
        return len(holder.assignment()) == 2

    wait_for(holds_all, 60, "the holder to own every partition")
    # From here the holder stops polling: it stays in the group (its heartbeats go on)
    # and never gives its partitions up, like a member that is stuck or gone.
    log = tmp_path / "worker.log"
    cfg = write_config(settings, tmp_path / "c.yaml")
    closed = False
    try:
        with worker_process(cfg, log) as proc:
            pos = wait_for_log(
                log,
                "waiting for the group to assign partitions (a member that did not leave "
                "cleanly can hold them for up to session.timeout.ms=6000",
                timeout=60,
            )
            assert f"assigned {settings.topics.inputs[0]}[" not in log.read_text()
            holder.close()  # it leaves: the worker gets the partitions
            closed = True
            wait_for_log(log, f"assigned {settings.topics.inputs[0]}[", after=pos)
            proc.terminate()
            assert proc.wait(60) == 0
    finally:
        if not closed:
            holder.close()
