"""One decoded batch through the model: predictions encoded, failing rows narrowed down.

The part every runtime shares (the confluent-kafka worker's inference thread,
the Faust agent): it takes records through the ``SourceRecord`` protocol and
returns bytes and reasons, and leaves producing them to its caller.

A group of rows that fails in onnxruntime is split in halves until the failing
rows stand alone; a row that fails alone is tried once more (a transient device
error must not cost a good row), then it is a failure. Before any row is called
a failure, the known-good warm-up input is run: if that fails too, the session
itself is broken, and :class:`InferenceError` is raised instead of condemning
every event that passes by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_infer.errors import InferenceError, RecordError
from stream_infer.inference.codec import Decoded, Rows
from stream_infer.inference.envelope import Encoder, Origins, SourceRecord
from stream_infer.inference.model import Model

__all__ = ["Outcome", "Predict", "infer_batch", "infer_rows", "split_rows"]

Predict = Callable[[dict[str, Any], int], list[Any]]  # feeds, row count -> outputs
Done = list[tuple[Rows, list[Any]]]
Failed = list[tuple[int, InferenceError]]


@dataclass
class Outcome:
    """What a batch comes to: every row is in exactly one of the three lists."""

    predictions: list[tuple[list[int], list[bytes]]] = field(default_factory=list)
    failures: Failed = field(default_factory=list)  # rows onnxruntime fails on, alone
    rejects: list[tuple[int, RecordError]] = field(default_factory=list)  # decode/validate
    predicted: list[tuple[dict[str, Any], list[Any]]] = field(default_factory=list)  # drift
    # With keep_predicted, the rows of each entry of ``predicted`` (a shadow runs on them).
    parts: list[Rows] = field(default_factory=list)


def split_rows(rows: Rows, at: int) -> tuple[Rows, Rows]:
    feeds = rows.feeds
    return (
        Rows(rows.index[:at], rows.ids[:at], {k: v[:at] for k, v in feeds.items()}),
        Rows(rows.index[at:], rows.ids[at:], {k: v[at:] for k, v in feeds.items()}),
    )


def infer_rows(
    rows: Rows,
    predict: Predict,
    misaligned: Callable[[Sequence[Any], int], str | None],
    batchable: bool = True,
) -> tuple[Done, Failed]:
    """Run one shape group; on failure split it until the failing rows stand alone."""
    done: Done = []
    failed: Failed = []
    if batchable:
        stack = [rows]
    else:  # a fixed batch axis of 1: one row per run
        stack = []
        rest = rows
        while len(rest.index) > 1:
            one, rest = split_rows(rest, 1)
            stack.append(one)
        stack.append(rest)
        stack.reverse()
    while stack:
        part = stack.pop()
        n = len(part.index)
        try:
            outputs = predict(part.feeds, n)
            problem = misaligned(outputs, n)
            if problem:
                raise InferenceError(problem)
        except InferenceError as exc:
            if n == 1:
                try:
                    outputs = predict(part.feeds, 1)
                    if misaligned(outputs, 1) is None:
                        done.append((part, outputs))
                        continue
                except InferenceError:
                    pass
                failed.append((part.index[0], exc))
                continue
            left, right = split_rows(part, n // 2)
            stack.append(right)
            stack.append(left)  # popped first: rows keep their order
            continue
        done.append((part, outputs))
    return done, failed


def infer_batch(
    model: Model,
    encoder: Encoder,
    records: Sequence[SourceRecord],
    decoded: Decoded,
    predict: Predict | None = None,
    keep_predicted: bool = False,
    origins: Origins | None = None,
) -> Outcome:
    """Infer and encode a whole decoded batch (``predict`` defaults to the model's own)."""
    run: Predict = predict or (lambda feeds, _rows: model.predict(feeds))
    outcome = Outcome(rejects=list(decoded.rejects))
    for rows in decoded.groups:
        done, failed = infer_rows(rows, run, encoder.misaligned, model.batchable)
        if failed and not model.healthy():
            raise InferenceError(
                f"the model fails on a known-good input as well ({failed[0][1]}); "
                "stopping without committing this batch"
            )
        for part, outputs in done:
            outcome.predictions.append(
                (part.index, encoder.encode(records, part, outputs, origins))
            )
            if keep_predicted:
                outcome.predicted.append((part.feeds, outputs))
                outcome.parts.append(part)
        outcome.failures.extend(failed)
    return outcome
