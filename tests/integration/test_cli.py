"""The command line end to end: broker lifecycle, Kafka's console tools, produce, consume, dev."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from stream_infer.tools.devbroker import classpath
from stream_infer.tools.loadgen import demo_value_events, with_poison
from stream_infer.tools.topics import TopicDecl, apply_topics
from tests.cli import run_cli
from tests.conftest import free_port
from tests.integration.conftest import ROOT, read, running, send, unique


def _cli(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**os.environ, **(env or {})}, cwd=cwd, stdin=stdin, timeout=timeout)


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
        # --port, as the README writes it, checks that the data dir's broker is that one.
        status = _cli("broker", "status", "--port", str(port), "--data-dir", str(data))
        assert status.returncode == 0 and f"bootstrap 127.0.0.1:{port}" in status.stdout
        other = port + 1 if port < 65535 else port - 1
        for cmd in ("status", "stop"):
            wrong = _cli("broker", cmd, "--port", str(other), "--data-dir", str(data))
            assert wrong.returncode == 1, (cmd, wrong.stdout, wrong.stderr)
            assert wrong.stderr.strip().splitlines() == [
                f"stream-infer: error: the broker of {data.resolve()} runs on port {port}, "
                f"not {other} (use --port {port}, or --data-dir for another broker)"
            ]
        assert _cli("broker", "status", "--data-dir", str(data)).returncode == 0  # still up
        again = _cli("broker", "start", "--port", str(port), "--data-dir", str(data))
        assert again.returncode == 0  # idempotent
        clash = _cli("broker", "start", "--port", str(port), "--data-dir", str(tmp_path / "other"))
        assert (
            clash.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in clash.stderr
        )
        assert len(clash.stderr.strip().splitlines()) == 1
    finally:
        stopped = _cli("broker", "stop", "--port", str(port), "--data-dir", str(data))
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
    assert generated.returncode == 0, generated.stderr
    # It reads the model's inputs but runs nothing: no word about providers or the model.
    target = settings.topics.inputs[0]
    assert generated.stderr.strip().splitlines() == [f"produced 10 events to {target}"]
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
    # The same file through STREAM_INFER_CONFIG, as a container names it.
    lag = _cli("lag", env={"STREAM_INFER_CONFIG": str(cfg)})
    assert lag.returncode == 0 and "total lag: 0" in lag.stdout, lag.stdout + lag.stderr
    assert target in lag.stdout


def test_produce_demo_mixes_in_poison(kafka, make_topic) -> None:
    topic = make_topic("poisoned", 1)
    env = {"STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS": kafka}
    sent = _cli(
        "produce", "--demo", "--count", "20", "--poison-every", "5", "--topic", topic, env=env
    )
    assert sent.returncode == 0 and "produced 20 events" in sent.stderr, sent.stderr
    got = read(kafka, topic, 20)
    poison = [r for r in got if r["key"] == "poison"]
    assert [r["offset"] for r in poison] == [4, 9, 14, 19]
    kinds = {type(r["value"]).__name__ for r in poison}
    assert kinds == {"str", "dict"}  # one undecodable, one with the wrong shape
    assert all(r["value"]["id"].startswith("bc-") for r in got if r["key"] != "poison")


def test_produce_without_a_source_says_which_sources_there_are() -> None:
    result = _cli("produce")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "stream-infer: usage error: say what to send: --file F (JSON lines; '-' for stdin), "
        "--demo (the demo dataset), or --count N (N generated rows shaped for the model)"
    ]
    result = _cli("produce", "--count", "3", "--poison-every", "2")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "stream-infer: usage error: --poison-every N needs --demo and N >= 0"
    )


def _path_without_stream_infer() -> str:
    """PATH as a fresh shell after the quickstart has it: no folder with a stream-infer."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / "stream-infer").exists())


def test_dev_runs_the_whole_loop(kafka: str, tmp_path: Path) -> None:
    names = {
        "inputs": [unique("dev-in")],
        "output": unique("dev-out"),
        "dead_letter": unique("dev-dlq"),
    }
    (tmp_path / "topics").mkdir()
    decls = []
    for name, parts in ((names["inputs"][0], 2), (names["output"], 2), (names["dead_letter"], 1)):
        (tmp_path / "topics" / f"{name}.yaml").write_text(
            yaml.safe_dump({"name": name, "partitions": parts})
        )
        decls.append(TopicDecl(name=name, partitions=parts))
    group = unique("dev")
    # Events from an earlier run that the group never processed: dev's totals must count them.
    apply_topics({"bootstrap.servers": kafka}, decls)
    keys, values = zip(
        *itertools.islice(with_poison(demo_value_events(False), 10), 40), strict=True
    )
    send(kafka, names["inputs"][0], list(values), list(keys))
    cfg = tmp_path / "dev.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka, "group_id": group},
                "topics": names,
                "model": {"path": "models/demo.onnx"},
            }
        )
    )
    env = {"PATH": _path_without_stream_infer()}
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
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "hold-out accuracy" in result.stdout  # trained the demo model into this folder
    assert (tmp_path / "models" / "demo.onnx").is_file()
    done = re.search(
        r"done: produced (\d+) \(plus (\d+) already waiting\), predictions (\d+), "
        r"dead letters (\d+)",
        result.stdout,
    )
    assert done, result.stdout
    produced, waiting, predictions, dead = map(int, done.groups())
    assert waiting == 40
    assert produced > 500 and dead >= produced // 50 - 1 + 4
    assert predictions + dead == produced + waiting
    # A stable identity for static membership, unless the config names one.
    assert f"worker dev-{socket.gethostname()}: " in result.stderr
    # The hints are runnable as printed, though stream-infer is not on this PATH.
    hints = dict(
        re.findall(r"^  (predictions|dead letters|group lag): +(.+)$", result.stdout, re.M)
    )
    assert set(hints) == {"predictions", "dead letters", "group lag"}, result.stdout
    script = Path(sys.executable).parent / "stream-infer"
    for hint in hints.values():
        words = shlex.split(hint)
        assert words[0] != "stream-infer"
        if script.is_file():
            assert words[0] == str(script)
    for what, expected in (("group lag", "total lag: 0"), ("dead letters", '"dlq.error.stage"')):
        ran = subprocess.run(
            shlex.split(hints[what]),
            cwd=tmp_path,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0 and expected in ran.stdout, (what, ran.stderr[-2000:])


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
    # A setting only the Faust runtime reads, or a librdkafka property it cannot translate.
    for env, expected in (
        (
            {"STREAM_INFER_FAUST__WEB_PORT": "8000"},
            "stream-infer: error: faust.web_port: 8000 is metrics.port too; give Faust's web "
            "server a port of its own, or null to keep it off",
        ),
        (
            {"STREAM_INFER_PROCESSING__GUARANTEE": "exactly_once"},
            "stream-infer: error: processing.guarantee: exactly_once is not available with "
            "--runtime faust (Faust's transactions let duplicates and losses through the "
            "exactly-once fault tests; see the README, 'Runtimes: native or Faust'): use "
            "--runtime native for exactly once",
        ),
        (
            {"STREAM_INFER_FAUST__DATADIR": "/tmp"},
            "stream-infer: error: invalid configuration: faust.datadir: unknown key "
            "[from STREAM_INFER_FAUST__DATADIR]",
        ),
        (
            {"STREAM_INFER_KAFKA__CONSUMER": '{"fetch.wait.max.ms": 5}'},
            "stream-infer: error: kafka.consumer.fetch.wait.max.ms: not supported by the Faust "
            "runtime (it takes auto.offset.reset, group.protocol, heartbeat.interval.ms, "
            "isolation.level, max.partition.fetch.bytes, max.poll.interval.ms, "
            "metadata.max.age.ms, session.timeout.ms; other librdkafka properties only apply "
            "to --runtime native)",
        ),
    ):
        result = _cli("run", "--runtime", "faust", env=env)
        assert (result.returncode, result.stderr.strip()) == (1, expected), result.stderr
    result = _cli("run", env={"STREAM_INFER_KAFKA__BOOTSTRAP_SERVER": "x:1"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "stream-infer: error: invalid configuration: kafka.bootstrap_server: unknown key "
        "[from STREAM_INFER_KAFKA__BOOTSTRAP_SERVER]"
    )
    gone = tmp_path / "gone.yaml"
    result = _cli("run", env={"STREAM_INFER_CONFIG": str(gone)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"stream-infer: error: config file not found: {gone} (from STREAM_INFER_CONFIG)"
    )
    result = _cli("run", "--config", str(bad), env={"STREAM_INFER_CONFIG": str(gone)})
    assert "kafka.bootstrap_server: unknown key" in result.stderr  # --config wins


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
        # Flags take no value, and the help must not suggest one.
        assert "<bool>" not in result.stdout, (args, result.stdout)


def _option_help(command: list[str], option: str) -> str:
    """The help text of one option: its line and the lines that continue it."""
    text = _cli(*command, "--help").stdout
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip().startswith("-") or not line.strip():
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def test_help_shows_flags_as_flags_and_says_what_they_do() -> None:
    assert _option_help(["produce"], "--demo") == "--demo Replay the demo dataset."
    produce = _cli("produce", "--help").stdout
    assert "--no-demo" not in produce and "--no-loop" not in produce
    assert (
        _option_help(["dev"], "--keep-broker") == "--keep-broker Leave the broker running on exit."
    )
    assert "--no-keep-broker" not in _cli("dev", "--help").stdout
    assert _option_help(["consume"], "--from-beginning") == (
        "--from-beginning / --from-end Start at the oldest record of every partition, or only "
        "show new ones. [default: from-beginning]"
    )
    assert _option_help(["run"], "--runtime").startswith("--runtime <native|faust> native:")
    bad = _cli("run", "--runtime", "flink")
    assert bad.returncode == 2 and "'flink' is not one of 'native', 'faust'" in bad.stderr


def test_lag_as_json_and_watched_with_rates(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(linear_model, partitions=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(settings.model_dump(mode="json", by_alias=True)))
    topic = settings.topics.inputs[0]
    send(kafka, topic, [orjson.dumps({"features": [1, 2, 3, 4]})] * 30, partition=0)
    once = _cli("lag", "--config", str(cfg), "--json")
    assert once.returncode == 0, once.stderr
    doc = orjson.loads(once.stdout)
    assert doc["group"] == settings.kafka.group_id and doc["total_lag"] == 30
    assert {(p["partition"], p["lag"], p["committed"]) for p in doc["partitions"]} == {
        (0, 30, None),
        (1, 0, None),
    }
    # Watching: events arrive on partition 1 between refreshes and show up as a rate.
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_infer", "lag", "--config", str(cfg), "--watch",
         "--json", "--interval", "1.5", "--times", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = orjson.loads(proc.stdout.readline())  # the first refresh is in: now add events
    send(kafka, topic, [orjson.dumps({"features": [1, 2, 3, 4]})] * 50, partition=1)
    rest = [orjson.loads(line) for line in proc.stdout.read().splitlines()]
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    assert first["total_lag"] == 30 and "in_per_s" not in first["partitions"][0]
    assert len(rest) == 2 and rest[-1]["total_lag"] == 80
    inflow = sum(p["partitions"][1]["in_per_s"] for p in rest)
    assert inflow > 0 and all(p["partitions"][0]["in_per_s"] == 0 for p in rest)
    table = _cli("lag", "--config", str(cfg), "--watch", "--interval", "0.2", "--times", "2")
    assert table.returncode == 0 and table.stdout.count("total lag: 80") == 2, table.stdout
    assert "IN/S" in table.stdout and "DONE/S" in table.stdout
