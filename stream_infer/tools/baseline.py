"""``stream-infer drift baseline``: a reference distribution from a file of input events.

Events are decoded by the worker's own decoder, so the baseline sees exactly
the arrays the worker will feed the model. Events the worker would
dead-letter (not JSON, not fitting the model, failing inference alone) are
counted and left out, never fatal: a sample taken from a live topic may well
hold a few.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from stream_infer.errors import DriftError, InferenceError
from stream_infer.inference.baseline import DEFAULT_BINS, Baseline, baseline_from_predictions
from stream_infer.inference.codec import Decoder, Rows
from stream_infer.inference.model import Model

__all__ = ["MIN_ROWS", "BaselineRun", "baseline_from_events"]

MIN_ROWS = 100
_BATCH = 512

Predicted = tuple[Mapping[str, np.ndarray], Sequence[Any]]


@dataclass
class BaselineRun:
    """What the command reports: the baseline, and the events it had to leave out."""

    baseline: Baseline | None = None
    events: int = 0
    skipped: int = 0
    first_reason: str = ""

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if not self.first_reason:
            self.first_reason = reason


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        value = line.rstrip(b"\r\n")
        if value.strip():
            yield value


def _chunks(lines: Iterator[bytes]) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= _BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _predict(model: Model, rows: Rows, run: BaselineRun) -> Iterator[Predicted]:
    """The group at once, or row by row when it fails (the failing rows are left out)."""
    try:
        yield rows.feeds, model.predict(rows.feeds)
        return
    except InferenceError:
        pass
    for r in range(len(rows.index)):
        one = {k: v[r : r + 1] for k, v in rows.feeds.items()}
        try:
            yield one, model.predict(one)
        except InferenceError as exc:
            run.skip(f"inference failed: {exc}")


def _predicted(model: Model, stream: IO[bytes], run: BaselineRun) -> Iterable[Predicted]:
    decoder = Decoder(model.signature)
    for chunk in _chunks(_lines(stream)):
        run.events += len(chunk)
        decoded = decoder.decode(chunk)
        for _, exc in sorted(decoded.rejects, key=lambda item: item[0]):
            run.skip(str(exc))
        for rows in decoded.groups:
            yield from _predict(model, rows, run)


def baseline_from_events(
    model: Model,
    stream: IO[bytes],
    *,
    bins: int = DEFAULT_BINS,
    name: str = "",
    version: str = "",
) -> BaselineRun:
    """Decode JSON lines, run the model on them in batches, bin inputs and outputs."""
    run = BaselineRun()
    # Kept in memory until binned (the binning needs every row anyway).
    predicted = list(_predicted(model, stream, run))
    usable = sum(len(next(iter(feeds.values()))) for feeds, _ in predicted)
    if usable < MIN_ROWS:
        why = f" ({run.skipped} do not fit the model; first: {run.first_reason})"
        raise DriftError(
            f"only {usable} of {run.events} events can be used{why if run.skipped else ''}; "
            f"a drift baseline needs at least {MIN_ROWS}"
        )
    run.baseline = baseline_from_predictions(
        model, predicted, bins=bins, name=name, version=version, min_rows=MIN_ROWS
    )
    return run
