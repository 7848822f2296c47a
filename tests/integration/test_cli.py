"""The command line end to end: broker lifecycle, Kafka's console tools, produce, consume, dev."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from stream_infer.tools.devbroker import classpath
from tests.conftest import free_port
from tests.integration.conftest import ROOT, read, running, unique


def _cli(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_infer", *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_broker_start_status_stop_from_separate_processes(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "b"
    started = _cli("broker", "start", "--port", str(port), "--data-dir", str(data))
    assert started.returncode == 0, started.stderr
    assert f"bootstrap 127.0.0.1:{port}" in started.stdout
    try:
        # It accepts Kafka requests the moment `start` returns.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        status = _cli("broker", "status", "--data-dir", str(data))
        assert status.returncode == 0 and "answering" in status.stdout
        again = _cli("broker", "start", "--port", str(port), "--data-dir", str(data))
        assert again.returncode == 0  # idempotent
        clash = _cli("broker", "start", "--port", str(port), "--data-dir", str(tmp_path / "other"))
        assert (
            clash.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in clash.stderr
        )
        assert len(clash.stderr.strip().splitlines()) == 1
    finally:
        stopped = _cli("broker", "stop", "--data-dir", str(data))
    assert stopped.returncode == 0 and "broker stopped" in stopped.stdout
    gone = _cli("broker", "status", "--data-dir", str(data))
    assert gone.returncode == 1 and "not running" in gone.stdout


def test_kafka_console_producer_feeds_the_worker(kafka, make_settings, linear_model: Path) -> None:
    settings = make_settings(linear_model, partitions=1)
    lines = (
        b'{"id": "console-1", "features": [1, 2, 3, 4]}\n'
        b'{"id": "console-2", "features": [4, 3, 2, 1]}\n'
    )
    tool = subprocess.run(
        [
            "java",
            "-cp",
            classpath(),
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            kafka,
            "--topic",
            settings.topics.inputs[0],
        ],
        input=lines,
        capture_output=True,
        timeout=120,
    )
    assert tool.returncode == 0, tool.stderr[-2000:]
    with running(settings):
        got = read(kafka, settings.topics.output, 2)
    assert sorted(r["value"]["id"] for r in got) == ["console-1", "console-2"]


def test_produce_consume_and_lag_commands(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(linear_model, partitions=2)
    cfg = tmp_path / "c.yaml"
    data = settings.model_dump(mode="json", by_alias=True)
    cfg.write_text(yaml.safe_dump(data))
    lines = b"".join(
        orjson.dumps({"id": f"line-{i}", "features": [i, 0, 0, 1]}) + b"\n" for i in range(25)
    )
    lines += b"\nnot json at all\n"
    sent = _cli("produce", "--config", str(cfg), "--file", "-", "--key-field", "id", stdin=lines)
    assert sent.returncode == 0, sent.stderr
    assert "produced 26 events" in sent.stderr
    generated = _cli("produce", "--config", str(cfg), "--count", "10", "--rate", "200")
    assert generated.returncode == 0 and "produced 10 events" in generated.stderr, generated.stderr
    with running(settings):
        read(kafka, settings.topics.output, 35)
        read(kafka, settings.topics.dead_letter, 1)
    out = _cli("consume", "--config", str(cfg), "--idle-timeout", "2")
    records = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 35
    assert {r["key"] for r in records if str(r["key"]).startswith("line-")} == {
        f"line-{i}" for i in range(25)
    }
    dead = _cli(
        "consume",
        "--config",
        str(cfg),
        "--topic",
        settings.topics.dead_letter,
        "--idle-timeout",
        "2",
    )
    [letter] = [orjson.loads(line) for line in dead.stdout.splitlines()]
    assert letter["value"] == "not json at all" and letter["headers"]["dlq.error.stage"] == "decode"
    lag = _cli("lag", "--config", str(cfg))
    assert lag.returncode == 0 and "total lag: 0" in lag.stdout, lag.stdout + lag.stderr


def test_dev_runs_the_whole_loop(kafka: str, tmp_path: Path) -> None:
    names = {
        "inputs": [unique("dev-in")],
        "output": unique("dev-out"),
        "dead_letter": unique("dev-dlq"),
    }
    (tmp_path / "topics").mkdir()
    for name, parts in ((names["inputs"][0], 2), (names["output"], 2), (names["dead_letter"], 1)):
        (tmp_path / "topics" / f"{name}.yaml").write_text(
            yaml.safe_dump({"name": name, "partitions": parts})
        )
    cfg = tmp_path / "dev.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka, "group_id": unique("dev")},
                "topics": names,
                "model": {"path": "models/demo.onnx"},
            }
        )
    )
    result = _cli(
        "dev",
        "--config",
        str(cfg),
        "--duration",
        "8",
        "--rate",
        "300",
        "--poison-every",
        "50",
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "hold-out accuracy" in result.stdout  # trained the demo model into this folder
    assert (tmp_path / "models" / "demo.onnx").is_file()
    done = re.search(r"done: produced (\d+), predictions (\d+), dead letters (\d+)", result.stdout)
    assert done, result.stdout
    produced, predictions, dead = map(int, done.groups())
    assert produced > 500 and dead >= produced // 50 - 1
    assert predictions + dead == produced


def test_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  bootstrap_server: x\n")
    result = _cli("run", "--config", str(bad))
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"stream-infer: error: invalid configuration in {bad}: "
        "kafka.bootstrap_server: unknown key"
    )
    missing_model = tmp_path / "m.yaml"
    missing_model.write_text("model:\n  path: /nonexistent/model.onnx\n")
    result = _cli("run", "--config", str(missing_model))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "stream-infer: error: model.path: file not found: /nonexistent/model.onnx"
    )
    for args in (["bench"], ["run", "--runtime", "faust"]):
        result = _cli(*args)
        assert result.returncode == 2 and "not implemented yet" in result.stderr, args


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["run", "--help"],
        ["topics", "apply", "--help"],
        ["produce", "--help"],
        ["consume", "--help"],
        ["dlq", "replay", "--help"],
        ["lag", "--help"],
        ["broker", "start", "--help"],
        ["broker", "stop", "--help"],
        ["broker", "status", "--help"],
        ["dev", "--help"],
        ["bench", "--help"],
    ):
        result = _cli(*args)
        assert result.returncode == 0 and "Usage" in result.stdout, args
