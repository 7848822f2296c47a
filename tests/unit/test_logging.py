"""The package logger: text for people, JSON lines for shippers, records that say where."""

from __future__ import annotations

import logging

import orjson
import pytest

from stream_infer.logging import configure_logging, get_logger, where


def test_json_lines_carry_level_logger_message_and_extras(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json_format=True)
    get_logger("worker").warning(
        "dead-lettering %s", where("events", 3, 42), extra={"stage": "decode"}
    )
    get_logger("worker").debug("not shown at INFO")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    doc = orjson.loads(lines[0])
    assert doc["level"] == "WARNING" and doc["logger"] == "stream_infer.worker"
    assert doc["msg"] == "dead-lettering events[3]@42"
    assert doc["stage"] == "decode"
    assert doc["ts"].endswith("Z")


def test_text_format_and_reconfiguration(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", json_format=False)
    configure_logging("DEBUG", json_format=False)  # idempotent: one handler, one line
    get_logger().debug("hello")
    err = capsys.readouterr().err
    assert err.count("hello") == 1 and "DEBUG" in err
    assert logging.getLogger("stream_infer").propagate is False
