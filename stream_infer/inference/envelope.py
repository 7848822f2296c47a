"""Output envelopes: prediction events (SPEC.md section 3) and dead-letter headers.

Both wrap what the rest of the pipeline computed around the consumed record
they answer for, so every output can be traced back to ``topic[partition]@offset``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import orjson

from stream_infer.errors import Stage
from stream_infer.inference.codec import Rows

__all__ = [
    "REPLAY_COUNT_HEADER",
    "STUB_BYTES",
    "Encoder",
    "Headers",
    "SourceRecord",
    "dead_letter_headers",
    "dead_letter_stub",
    "error_class",
]

_ERROR_MESSAGE_CAP = 1024
STUB_BYTES = 1024  # key and value bytes a dead-letter stub keeps
# Set by ``dlq replay`` on the events it sends back; the one ``dlq.*`` header a
# dead letter inherits from its input, so the count survives a second failure.
REPLAY_COUNT_HEADER = "dlq.replay.count"
Headers = list[tuple[str, str | bytes | None]]


class SourceRecord(Protocol):
    """What the codec reads of a consumed record (confluent-kafka's ``Message`` fits)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> bytes | str | None: ...
    def value(self) -> bytes | str | None: ...
    def headers(self) -> Headers | None: ...


class Encoder:
    """One prediction event per row, in the SPEC.md section 3 format.

    Outputs are converted to Python lists once per batch (``tolist`` runs in C),
    so the per-row work is building one small dict and one ``orjson.dumps``.
    """

    def __init__(self, model_name: str, model_version: str, output_names: Sequence[str]) -> None:
        self._name = model_name
        self._version = model_version
        self._outputs = tuple(output_names)

    def misaligned(self, outputs: Sequence[Any], rows: int) -> str | None:
        """Why the outputs cannot be split into ``rows`` rows, or None when they can."""
        for name, value in zip(self._outputs, outputs, strict=True):
            got = (
                value.shape[0]
                if isinstance(value, np.ndarray) and value.ndim
                else (len(value) if isinstance(value, list) else None)
            )
            if got != rows:
                return f"output {name} is not batch-aligned: {rows} rows in, {got} out"
        return None

    def encode(
        self, records: Sequence[SourceRecord], rows: Rows, outputs: Sequence[Any]
    ) -> list[bytes]:
        columns = [v.tolist() if isinstance(v, np.ndarray) else list(v) for v in outputs]
        names, name, version = self._outputs, self._name, self._version
        dumps, opt = orjson.dumps, orjson.OPT_NON_STR_KEYS
        payloads = []
        for j, i in enumerate(rows.index):
            rec = records[i]
            payloads.append(
                dumps(
                    {
                        "id": rows.ids[j],
                        "model": name,
                        "model_version": version,
                        "outputs": {n: col[j] for n, col in zip(names, columns, strict=True)},
                        "source": {
                            "topic": rec.topic(),
                            "partition": rec.partition(),
                            "offset": rec.offset(),
                        },
                        "event_time_ms": rec.timestamp()[1],
                    },
                    option=opt,
                )
            )
        return payloads


def _cap(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _ERROR_MESSAGE_CAP else line[: _ERROR_MESSAGE_CAP - 3] + "..."


def dead_letter_headers(
    record: SourceRecord,
    stage: Stage,
    error_class: str,
    message: str,
    *,
    group: str,
    model_version: str,
    worker: str,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> Headers:
    """The original headers plus the ``dlq.*`` ones of SPEC.md section 3.

    A replayed event that fails again must not carry two generations of
    ``dlq.*`` headers, so stale ones are dropped before the fresh ones go on;
    only its replay count stays, or ``dlq replay`` could never park an event
    that keeps failing.
    """
    kept = [
        (k, v)
        for k, v in (record.headers() or [])
        if not k.startswith("dlq.") or k == REPLAY_COUNT_HEADER
    ]
    added = {
        "dlq.original.topic": record.topic() or "",
        "dlq.original.partition": str(record.partition()),
        "dlq.original.offset": str(record.offset()),
        "dlq.original.timestamp": str(record.timestamp()[1]),
        "dlq.error.stage": stage,
        "dlq.error.class": error_class,
        "dlq.error.message": _cap(message),
        "dlq.consumer.group": group,
        "dlq.model.version": model_version,
        "dlq.worker": worker,
        "dlq.failed.at": str(now_ms()),
    }
    return kept + [(k, v.encode("utf-8")) for k, v in added.items()]


def dead_letter_stub(
    record: SourceRecord,
    reason: str,
    *,
    group: str,
    model_version: str,
    worker: str,
) -> tuple[bytes | str | None, bytes | str | None, Headers]:
    """Key, value and headers of a stub, for a dead letter too large for its topic.

    The stub keeps why and where (the ``dlq.*`` headers only, with
    ``dlq.headers.dropped`` counting the original headers left out) and at most
    ``STUB_BYTES`` of key and of value, so that it fits any sane topic; the
    event itself stays readable at ``dlq.original.*`` for the input topic's
    retention. ``reason`` says why the full dead letter was refused.
    """
    value, key = record.value(), record.key()
    size = len(value) if value is not None else 0
    dropped = len(record.headers() or [])
    headers: Headers = [
        (k, v)
        for k, v in dead_letter_headers(
            record, "produce", "ProduceError",
            f"dead letter too large for the dead-letter topic ({reason}); "
            f"value cut to its first {STUB_BYTES} of {size} bytes",
            group=group, model_version=model_version, worker=worker,
        )
        if k.startswith("dlq.")
    ]  # fmt: skip
    headers += [("dlq.value.truncated", b"true"), ("dlq.value.size", str(size).encode())]
    if dropped:
        headers.append(("dlq.headers.dropped", str(dropped).encode()))
    if key is not None and len(key) > STUB_BYTES:
        headers.append(("dlq.key.size", str(len(key)).encode()))
        key = key[:STUB_BYTES]
    return key, (value[:STUB_BYTES] if value is not None else None), headers


def error_class(exc: BaseException) -> str:
    """The class named in ``dlq.error.class``: the root cause's when one is chained.

    For an inference failure that is onnxruntime's own class (``InvalidArgument``,
    ``Fail``...), which says more than our wrapper does.
    """
    return type(exc.__cause__ or exc).__name__
