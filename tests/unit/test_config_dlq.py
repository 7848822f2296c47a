"""The ``dlq`` section: defaults, the derived replay group, validation that names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_infer.config import load_settings
from stream_infer.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(__import__("os").environ):
        if var.upper().startswith("STREAM_INFER_"):
            monkeypatch.delenv(var)


def test_defaults_and_the_derived_replay_group() -> None:
    s = load_settings()
    assert s.dlq.max_replays == 3
    assert s.dlq.group(s.kafka.group_id) == "stream-infer.dlq-replay"


def test_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dlq: {replay_group: ops-replay, max_replays: 5}\n")
    monkeypatch.setenv("STREAM_INFER_DLQ__MAX_REPLAYS", "2")
    s = load_settings(path)
    assert s.dlq.group("ignored") == "ops-replay"
    assert s.dlq.max_replays == 2


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("dlq: {max_replay: 3}\n", "dlq.max_replay: unknown key"),
        ("dlq: {max_replays: 0}\n", "dlq.max_replays: Input should be greater than or equal to 1"),
        ("dlq: {transaction_ms: 60000}\n", "dlq.transaction_ms"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        load_settings(path)
    assert words in str(info.value)
