"""Configuration: SPEC defaults, file + environment layering, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_infer.config import Settings, load_settings
from stream_infer.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_spec_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(__import__("os").environ):
        if var.upper().startswith("STREAM_INFER_"):
            monkeypatch.delenv(var)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "localhost:9092"
    assert s.kafka.group_id == "stream-infer"
    assert s.kafka.consumer == s.kafka.producer == s.kafka.common == {}
    assert s.topics.inputs == ["events"]
    assert (s.topics.output, s.topics.dead_letter) == ("predictions", "events.dlq")
    assert (s.model.path, s.model.name, s.model.version, s.model.device) == (
        "models/demo.onnx",
        "demo",
        "1",
        "auto",
    )
    assert (s.batching.max_batch_size, s.batching.max_wait_ms) == (512, 10)
    assert s.processing.guarantee == "at_least_once"
    assert s.metrics.port == 8000


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        """
kafka:
  group_id: from-file
  bootstrap_servers: file:9092
  consumer: {fetch.min.bytes: 5}
topics:
  inputs: [a, b]
model:
  version: 3
""",
    )
    monkeypatch.setenv("STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("STREAM_INFER_BATCHING__MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("STREAM_INFER_TOPICS__OUTPUT", "out")
    s = load_settings(path)
    assert s.kafka.bootstrap_servers == "env:9092"
    assert s.kafka.group_id == "from-file"
    assert s.topics.inputs == ["a", "b"] and s.topics.output == "out"
    assert s.batching.max_batch_size == 64
    assert s.model.version == "3"
    conf = s.kafka.consumer_config("c1")
    assert conf["fetch.min.bytes"] == 5
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert s.kafka.producer_config("p1")["enable.idempotence"] is True


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("kafka:\n  bootstrap_server: x\n", "kafka.bootstrap_server: unknown key"),
        ("bogus: 1\n", "bogus: unknown key"),
        (
            "batching:\n  max_batch_size: 0\n",
            "batching.max_batch_size: Input should be greater than or equal to 1",
        ),
        (
            "batching:\n  max_wait_ms: soon\n",
            "batching.max_wait_ms: Input should be a valid integer",
        ),
        (
            "model:\n  device: gpu\n",
            "model.device: Input should be 'auto', 'cpu', 'cuda' or 'tensorrt' (got 'gpu')",
        ),
        ("processing:\n  guarantee: at_most_once\n", "processing.guarantee"),
        ("topics:\n  inputs: []\n", "topics.inputs"),
        ("topics:\n  inputs: [a, a]\n", "listed twice"),
        ("topics:\n  inputs: [a]\n  output: a\n", "topics.output 'a' is also an input topic"),
        (
            "topics:\n  inputs: [a]\n  dead_letter: a\n",
            "topics.dead_letter 'a' is also an input topic",
        ),
        (
            "kafka:\n  consumer: {enable.auto.commit: true}\n",
            "'enable.auto.commit' is managed by stream-infer",
        ),
        ("kafka:\n  producer: {transactional.id: x}\n", "'transactional.id' is managed"),
        ("kafka:\n  common: {bootstrap.servers: x}\n", "'bootstrap.servers' is managed"),
        ("metrics:\n  port: 70000\n", "metrics.port"),
        ("kafka: [1, 2]\n", "kafka"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("kafka:\n  group_id: [unclosed\n", "not valid YAML (line 3"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    message = str(info.value)
    assert words in message
    assert "\n" not in message


def test_bad_environment_overrides_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_BATCHING__MAX_WAIT_MS", "-1")
    with pytest.raises(
        ConfigError, match=r"batching.max_wait_ms: .*\[from STREAM_INFER_BATCHING__MAX_WAIT_MS\]"
    ):
        load_settings()


def test_unknown_environment_section_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_KAFAK__GROUP_ID", "x")
    with pytest.raises(ConfigError, match="STREAM_INFER_KAFAK__GROUP_ID"):
        load_settings()


def test_unknown_environment_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_KAFKA__GROUPID", "x")
    with pytest.raises(ConfigError, match=r"kafka\.groupid: unknown key"):
        load_settings()


def test_environment_json_for_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_TOPICS__INPUTS", '["x", "y"]')
    assert load_settings().topics.inputs == ["x", "y"]
    monkeypatch.setenv("STREAM_INFER_TOPICS__INPUTS", "x,y")
    with pytest.raises(ConfigError, match="STREAM_INFER_TOPICS__"):
        load_settings()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_kip848_protocol_drops_the_assignor() -> None:
    s = Settings(kafka={"consumer": {"group.protocol": "consumer"}})  # type: ignore[arg-type]
    assert "partition.assignment.strategy" not in s.kafka.consumer_config("c")


def test_tool_variables_are_not_mistaken_for_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_CACHE_DIR", "/tmp/x")
    monkeypatch.setenv("STREAM_INFER_BROKER_HEAP", "1g")
    monkeypatch.setenv("STREAM_INFER_METRICS__PORT", "9100")
    assert load_settings().metrics.port == 9100
    monkeypatch.setenv("STREAM_INFER_CACHE_DIR__X", "1")
    with pytest.raises(ConfigError, match="STREAM_INFER_CACHE_DIR__X"):
        load_settings()


def test_unknown_environment_key_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_KAFKA__BOOTSTRAP_SERVER", "x:1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid configuration: kafka.bootstrap_server: unknown key "
        "[from STREAM_INFER_KAFKA__BOOTSTRAP_SERVER]"
    )


def test_unknown_key_in_a_json_override_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_INFER_TOPICS", '{"outptu": "x"}')
    with pytest.raises(
        ConfigError, match=r"topics\.outptu: unknown key \[from STREAM_INFER_TOPICS\]"
    ):
        load_settings()


def test_unknown_key_in_the_file_has_no_environment_tag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, "kafka:\n  bootstrap_server: x\n"))
    assert str(info.value).endswith("kafka.bootstrap_server: unknown key")


def test_stream_infer_config_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = _write(tmp_path, "kafka:\n  group_id: from-env-file\n")
    monkeypatch.setenv("STREAM_INFER_CONFIG", str(from_env))
    assert load_settings().kafka.group_id == "from-env-file"
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("kafka:\n  group_id: explicit\n")
    assert load_settings(explicit).kafka.group_id == "explicit"  # --config wins


def test_stream_infer_config_naming_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_INFER_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        f"config file not found: {tmp_path / 'gone.yaml'} (from STREAM_INFER_CONFIG)"
    )
