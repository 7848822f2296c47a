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


def _librdkafka_record(text: str, level: int = logging.ERROR, client: str = "consumer-1"):
    """A record shaped the way confluent-kafka hands librdkafka's lines to a logger."""
    return logging.LogRecord(
        "stream_infer.librdkafka", level, __file__, 0, "%s [%s] %s",
        ("FAIL", f"rdkafka#{client}", text), None,
    )  # fmt: skip


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def librdkafka_log():
    """The librdkafka logger with its filter replaced by one on a hand-moved clock."""
    from stream_infer.logging import LibrdkafkaFilter, librdkafka_filter

    logger = logging.getLogger("stream_infer.librdkafka")
    now = [1000.0]
    fresh = LibrdkafkaFilter(window_s=10.0, clock=lambda: now[0])
    logger.removeFilter(librdkafka_filter())
    logger.addFilter(fresh)
    collect = _Collect()
    logger.addHandler(collect)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield logger, fresh, now, collect.records
    finally:
        logger.removeHandler(collect)
        logger.removeFilter(fresh)
        logger.addFilter(librdkafka_filter())
        logger.setLevel(old_level)


REFUSED = (
    "[thrd:127.0.0.1:9999/bootstrap]: 127.0.0.1:9999/bootstrap: Connect to "
    "ipv4#127.0.0.1:9999 failed: Connection refused (after {ms}ms in state CONNECT{extra})"
)


def test_a_flood_of_identical_librdkafka_lines_prints_once_then_a_count(librdkafka_log) -> None:
    logger, _filt, now, records = librdkafka_log
    for i in range(190):
        extra = f", {i} identical error(s) suppressed" if i % 3 == 0 and i else ""
        logger.handle(_librdkafka_record(REFUSED.format(ms=i % 4, extra=extra)))
        now[0] += 0.001
    assert len(records) == 1
    assert "Connection refused" in records[0].getMessage()
    now[0] += 10.0  # the window has passed: the next line of any kind reports the count
    logger.handle(_librdkafka_record("something else entirely"))
    messages = [r.getMessage() for r in records]
    assert len(messages) == 3
    assert messages[1].endswith("(repeated 189 times in the last 10s)")
    assert "Connection refused" in messages[1] and "after" not in messages[1]
    assert messages[2].endswith("something else entirely")


def test_a_repeat_after_the_window_comes_through_with_the_count(librdkafka_log) -> None:
    logger, filt, now, records = librdkafka_log
    for _ in range(5):
        logger.handle(_librdkafka_record(REFUSED.format(ms=0, extra="")))
    now[0] += 11.0
    logger.handle(_librdkafka_record(REFUSED.format(ms=2, extra="")))
    messages = [r.getMessage() for r in records]
    assert len(messages) == 3  # the first, the count of the 4 held back, the new first
    assert "(repeated 4 times in the last 11s)" in messages[1]
    filt.flush()
    assert len(records) == 3  # nothing pending: flush adds nothing


def test_flush_reports_pending_counts(librdkafka_log) -> None:
    logger, filt, now, records = librdkafka_log
    for client in ("producer-1", "producer-2", "producer-3"):  # instance numbers differ
        logger.handle(_librdkafka_record(REFUSED.format(ms=1, extra=""), client=client))
    logger.handle(_librdkafka_record(REFUSED.format(ms=1, extra=""), client="consumer-7"))
    assert len(records) == 2  # a producer's and a consumer's are different lines
    now[0] += 3.0
    filt.flush()
    assert len(records) == 3
    assert records[2].getMessage().endswith("(repeated 2 times in the last 3s)")


def test_a_different_message_or_level_is_not_suppressed(librdkafka_log) -> None:
    logger, _filt, _now, records = librdkafka_log
    logger.handle(_librdkafka_record(REFUSED.format(ms=0, extra="")))
    logger.handle(_librdkafka_record(REFUSED.format(ms=0, extra=""), level=logging.WARNING))
    logger.handle(_librdkafka_record(REFUSED.format(ms=0, extra="").replace("9999", "9998")))
    assert len(records) == 3


def test_coordinator_load_on_a_fresh_broker_is_demoted_to_debug(librdkafka_log) -> None:
    logger, _filt, _now, records = librdkafka_log
    getpid = (
        "[thrd:main]: Failed to acquire idempotence PID from broker 127.0.0.1:9092/1: "
        "Broker: Coordinator load in progress: retrying"
    )
    logger.handle(_librdkafka_record(getpid, level=logging.WARNING))
    assert records == []  # the logger is at INFO: a DEBUG line is not shown
    logger.setLevel(logging.DEBUG)
    logger.handle(_librdkafka_record(getpid.replace("9092", "9093"), level=logging.WARNING))
    assert [r.levelname for r in records] == ["DEBUG"]


def test_sampled_log_shows_the_first_of_each_kind_then_one_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stream_infer.logging import SampledLog

    configure_logging("INFO")
    sampled = SampledLog(
        get_logger("producer"),
        lambda total, secs, counts: (
            f"dead-lettered {total} events in the last {secs:.0f}s: "
            + ", ".join(f"{k} {n}" for k, n in counts.items())
        ),
        window_s=60.0,
    )
    for i in range(8):
        sampled.log("validate/ValidationError", "dead-lettering %s: bad shape", where("e", 0, i))
    for i in range(4):
        sampled.log("decode/DecodeError", "dead-lettering %s: not JSON", where("e", 1, i))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert "WARNING" in lines[0] and lines[0].endswith("dead-lettering e[0]@0: bad shape")
    assert lines[1].endswith("dead-lettering e[1]@0: not JSON")
    sampled.flush()  # what the worker calls at shutdown
    [summary] = capsys.readouterr().err.strip().splitlines()
    assert summary.endswith(
        "dead-lettered 12 events in the last 1s: validate/ValidationError 8, decode/DecodeError 4"
    )
    sampled.flush()
    assert capsys.readouterr().err == ""  # nothing pending any more


def test_sampled_log_summarises_on_its_own_when_the_window_closes() -> None:
    import threading

    from stream_infer.logging import SampledLog

    logger = logging.getLogger("test.sampled")
    logger.propagate = False
    collect = _Collect()
    logger.addHandler(collect)
    summarised = threading.Event()
    sampled = SampledLog(
        logger,
        lambda total, _s, counts: summarised.set() or f"{total} {counts}",  # type: ignore[func-returns-value]
        window_s=0.3,
    )
    sampled.log("a", "first a")
    sampled.log("a", "second a")
    sampled.log("b", "first b")
    assert summarised.wait(5), "no summary after the window closed"
    assert [r.getMessage() for r in collect.records] == ["first a", "first b", "3 {'a': 2, 'b': 1}"]
    sampled.log("a", "a in a new window")  # a new window: its first a is shown again
    assert collect.records[-1].getMessage() == "a in a new window"
