"""The one package logger, as plain text for people or JSON lines for log shippers.

Records about a message say where it lives as ``topic[partition]@offset`` so a
log line can be pasted into ``stream-infer consume`` or ``kcat`` directly.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

__all__ = [
    "LibrdkafkaFilter",
    "SampledLog",
    "configure_logging",
    "get_logger",
    "librdkafka_filter",
    "normalise_librdkafka",
    "where",
]

LOGGER_NAME = "stream_infer"
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def where(topic: str | None, partition: int | None, offset: int | None) -> str:
    return f"{topic}[{partition}]@{offset}"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "INFO", json_format: bool = False) -> None:
    """Route the package logger to stderr; idempotent so tests can call it freely."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


# -- librdkafka's own log lines ----------------------------------------------------------

# Parts of a librdkafka line that change between otherwise identical reports.
_VOLATILE = (
    (re.compile(r"\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)"), ""),
    (re.compile(r"\s*\(\d+ identical error\(s\) suppressed\)"), ""),
    # The client's instance number: "rdkafka#producer-3", "<client.id>#consumer-84".
    (re.compile(r"#(producer|consumer)-\d+\]"), r"#\1]"),
)
# Messages that only say the cluster is still warming up and that librdkafka retries on its
# own: a fresh broker loads its coordinators for a few seconds after start-up.
_TRANSIENT = re.compile(
    r"Coordinator load in progress|COORDINATOR_LOAD_IN_PROGRESS|"
    r"Coordinator not available: retrying|COORDINATOR_NOT_AVAILABLE.*retrying"
)


def normalise_librdkafka(text: str) -> str:
    """A librdkafka line without the parts that vary between repeats of the same report."""
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text


class LibrdkafkaFilter(logging.Filter):
    """Lets the first of identical librdkafka lines through and counts the rest.

    librdkafka reports every failed reconnect, and confluent-kafka delivers the lines
    queued while a call blocked all at once: a missing broker used to print some 190
    identical lines within milliseconds. Identical means equal after the volatile
    parts (``after 3ms in state CONNECT``, ``N identical error(s) suppressed``, the
    client's instance number) are dropped. The count is reported, as ``(repeated N
    times in the last Ws)``, when the window has passed: on the next line of any
    kind, or by :meth:`flush` (at exit). Known-transient warnings are demoted to DEBUG.
    """

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.RLock()
        # normalised text -> (window start, suppressed count, the first record)
        self._seen: dict[str, tuple[float, int, logging.LogRecord]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_summary", False):
            return True
        if record.levelno > logging.DEBUG and _TRANSIENT.search(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
        key = f"{record.levelno}:{normalise_librdkafka(record.getMessage())}"
        with self._lock:
            now = self._clock()
            self._report(now, skip=key)
            seen = self._seen.get(key)
            if seen is None or now - seen[0] >= self.window_s:
                if seen is not None and seen[1]:
                    self._emit(seen[2], seen[1], now - seen[0])
                self._seen[key] = (now, 0, record)
                return True
            self._seen[key] = (seen[0], seen[1] + 1, seen[2])
            return False

    def _report(self, now: float, skip: str | None = None, every: bool = False) -> None:
        """Summaries for every line whose window has passed (``every``: all) with repeats."""
        for key, (start, count, first) in list(self._seen.items()):
            if key == skip or (not every and now - start < self.window_s):
                continue
            del self._seen[key]
            if count:
                self._emit(first, count, now - start)

    def _emit(self, first: logging.LogRecord, count: int, seconds: float) -> None:
        summary = logging.LogRecord(
            first.name, first.levelno, first.pathname, first.lineno,
            "%s (repeated %d times in the last %.0fs)",
            (normalise_librdkafka(first.getMessage()), count, max(seconds, 1.0)), None,
        )  # fmt: skip
        summary._summary = True
        logging.getLogger(first.name).handle(summary)

    def flush(self) -> None:
        """Report every pending count now (the process is about to exit)."""
        with self._lock:
            self._report(self._clock(), every=True)


def _flush_at_exit(filt: LibrdkafkaFilter) -> None:
    # A handler's stream may already be closed by then (a test runner's capture): a lost
    # count is no reason for a traceback on the way out.
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        filt.flush()
    finally:
        logging.raiseExceptions = raising


_LIBRDKAFKA_FILTER = LibrdkafkaFilter()
logging.getLogger(f"{LOGGER_NAME}.librdkafka").addFilter(_LIBRDKAFKA_FILTER)
atexit.register(_flush_at_exit, _LIBRDKAFKA_FILTER)


def librdkafka_filter() -> LibrdkafkaFilter:
    """The filter on ``stream_infer.librdkafka`` (every client's ``logger``)."""
    return _LIBRDKAFKA_FILTER


# -- our own repetitive warnings --------------------------------------------------------


class SampledLog:
    """The first event of each kind per window logged in full; the rest counted, then summed up.

    A stream of poison events would otherwise print one warning per event and bury
    everything else. Within a window of ``window_s`` seconds the first event of each
    kind is logged as given; when the window closes (a timer, so a quiet stream still
    gets its summary), one line sums up every event of the window by kind, if any were
    held back. :meth:`flush` emits a pending summary at once (call it at shutdown).
    ``summary(total, seconds, counts)`` words that line.
    """

    def __init__(
        self,
        logger: logging.Logger,
        summary: Callable[[int, float, dict[str, int]], str],
        window_s: float = 10.0,
        level: int = logging.WARNING,
    ) -> None:
        self._log = logger
        self._summary = summary
        self.window_s = window_s
        self._level = level
        self._lock = threading.Lock()
        self._start = 0.0
        self._counts: dict[str, int] = {}
        self._held = 0
        self._timer: threading.Timer | None = None

    def log(self, kind: str, msg: str, *args: Any) -> None:
        """One event of ``kind``: logged in full if it is the first of its kind this window."""
        with self._lock:
            now = time.monotonic()
            if self._counts and now - self._start >= self.window_s:
                self._close(now)
            if not self._counts:
                self._start = now
            first = kind not in self._counts
            self._counts[kind] = self._counts.get(kind, 0) + 1
            if not first:
                self._held += 1
                if self._timer is None:
                    self._timer = threading.Timer(self._start + self.window_s - now, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
        if first:
            self._log.log(self._level, msg, *args)

    def _close(self, now: float) -> None:
        """End the window (lock held): the summary line if anything was held back."""
        counts, held, seconds = self._counts, self._held, now - self._start
        self._counts, self._held = {}, 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if held:
            total = sum(counts.values())
            self._log.log(self._level, "%s", self._summary(total, max(seconds, 1.0), counts))

    def flush(self) -> None:
        """Emit the summary of the current window now, if events were held back."""
        with self._lock:
            if self._counts:
                self._close(time.monotonic())
