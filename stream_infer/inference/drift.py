"""Drift: how far the rows a worker predicted lately are from the baseline, as PSI.

The Population Stability Index of one feature is

    PSI = sum over bins i of (q_i - p_i) * ln(q_i / p_i)

with p the baseline's share of rows in bin i and q the recent window's. Below
0.1 is usually read as stable, 0.1 to 0.25 as worth watching, above 0.25 as a
shift worth acting on.

An empty bin would make ln(q/p) infinite, so both distributions are smoothed
by adding half a row to every bin (the Jeffreys prior, as in additive
smoothing): ``q_i = (c_i + 0.5) / (n + 0.5 k)`` for k bins. On a busy window
the half row is negligible; on a small one it pulls PSI towards 0 instead of
inventing a huge value from a bin that happened to stay empty.

The monitor keeps bin counts, not rows: the window is split into time slots
(12 by default, 5 s each for 60 s), each holding per-edge counts, and a slot is
reset when its time comes round again. Memory is fixed by the model's width and
the number of slots, whatever the traffic. ``observe`` bins whole batches with
array operations; it is cheap enough to run on every predicted batch (see
``benchmarks/drift_cost.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_infer.inference.baseline import (
    Baseline,
    TensorStats,
    bin_counts,
    build_baseline,
    compare_dtype,
    edge_matrix,
    greater_counts,
)
from stream_infer.inference.baseline_file import check_fits, load_baseline, save_baseline

__all__ = [
    "SMOOTHING",
    "Baseline",
    "DriftMonitor",
    "DriftSnapshot",
    "build_baseline",
    "check_fits",
    "load_baseline",
    "psi",
    "save_baseline",
]

SMOOTHING = 0.5  # rows added to every bin of both distributions (see the module docstring)
DEFAULT_SLOTS = 12

Key = tuple[str, str]  # (input or output name, flat position)


def psi(expected: np.ndarray, actual: np.ndarray, bins: np.ndarray | None = None) -> np.ndarray:
    """PSI per column of two (bins, columns) count arrays, smoothed as described above.

    ``bins`` gives each column's real bin count when columns are padded to a
    common depth (padded bins hold 0 and are left out); by default every row
    is a real bin.
    """
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    depth = expected.shape[0]
    k = np.full(expected.shape[1:], depth) if bins is None else np.asarray(bins)
    p = (expected + SMOOTHING) / (expected.sum(axis=0) + SMOOTHING * k)
    q = (actual + SMOOTHING) / (actual.sum(axis=0) + SMOOTHING * k)
    real = np.arange(depth).reshape(-1, *([1] * (expected.ndim - 1))) < k
    value: np.ndarray = np.where(real, (q - p) * np.log(q / p), 0.0).sum(axis=0)
    return value


@dataclass(frozen=True, slots=True)
class DriftSnapshot:
    """PSIs and output moments over the window; NaN where the window has no rows."""

    rows: int  # rows observed within the window
    window_s: float
    features: dict[Key, float]  # (input, feature) -> PSI
    outputs: dict[Key, float]  # (output, index) -> PSI
    output_mean: dict[Key, float]  # (output, index) -> mean over the window (finite values)
    output_std: dict[Key, float]  # (output, index) -> population standard deviation
    mismatched: int  # tensors of observed batches left out: shape or type unlike the baseline


class _Block:
    """One tracked tensor: its edges, reference bins, and per-slot accumulators."""

    def __init__(self, stats: TensorStats, slots: int, moments: bool) -> None:
        self.name = stats.name
        self.labels = stats.labels
        self.shape = stats.shape
        self.width = len(stats.columns)
        self.dtype = compare_dtype(np.dtype(stats.dtype))
        self.edges = edge_matrix(stats.columns, self.dtype)
        depth = self.edges.shape[0] + 1
        # Reference counts padded to the common depth; padded bins hold 0.
        self.reference = np.zeros((depth, self.width), dtype=np.int64)
        for j, col in enumerate(stats.columns):
            self.reference[: len(col.counts), j] = col.counts
        # The real bin count of each column is fixed by its edges, not by which are empty.
        self.bins = np.array([len(c.edges) + 1 for c in stats.columns])
        self.greater = np.zeros((slots, *self.edges.shape), dtype=np.int64)
        self.rows = np.zeros(slots, dtype=np.int64)
        # Sums of (value - reference mean) and of its square, and the count of finite
        # values: additive per slot, and centred so that the variance does not cancel out.
        self.center = np.array([c.mean if c.mean is not None else 0.0 for c in stats.columns])
        self.moments = np.zeros((slots, 3, self.width)) if moments else None  # n, sum, sum sq

    def measure(self, value: Any) -> tuple[np.ndarray, int, np.ndarray | None] | None:
        """Per-edge counts (and moments) of one batch, or None if it does not fit."""
        if not isinstance(value, np.ndarray) or value.ndim < 1 or value.dtype.kind not in "biuf":
            return None
        if value.shape[1:] != self.shape:
            return None
        n = value.shape[0]
        x = value.reshape(n, self.width)
        greater = greater_counts(x.astype(self.dtype, copy=False), self.edges)
        return greater, n, (_moments(x, self.center) if self.moments is not None else None)

    def add(self, slot: int, greater: np.ndarray, n: int, moments: np.ndarray | None) -> None:
        self.greater[slot] += greater
        self.rows[slot] += n
        if self.moments is not None and moments is not None:
            self.moments[slot] += moments

    def clear(self, slot: int) -> None:
        self.greater[slot] = 0
        self.rows[slot] = 0
        if self.moments is not None:
            self.moments[slot] = 0.0

    def psi(self, live: np.ndarray) -> np.ndarray:
        rows = int(self.rows[live].sum())
        if not rows:
            return np.full(self.width, np.nan)
        window = bin_counts(self.greater[live].sum(axis=0), rows)
        return psi(self.reference, window, self.bins)

    def mean_std(self, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.moments is not None
        n, total, squares = self.moments[live].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = total / n
            var = np.maximum(squares / n - shift * shift, 0.0)
            return np.where(n > 0, self.center + shift, np.nan), np.where(
                n > 0, np.sqrt(var), np.nan
            )


def _moments(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """(count, sum, sum of squares) of ``x - center`` per column, over finite values only.

    Sums as products with a vector of ones: numpy's column sums of a narrow
    (512 x 2) array took 6.5 us each, the products under 2 us.
    """
    dev = x.astype(np.float64) - center
    ones = np.ones(dev.shape[0])
    out = np.empty((3, dev.shape[1]))
    out[1] = ones @ dev
    if np.isfinite(out[1]).all():
        out[0] = dev.shape[0]
    else:  # NaN or infinite outputs: leave them out rather than poison the window
        finite = np.isfinite(dev)
        dev = np.where(finite, dev, 0.0)
        out[0] = ones @ finite
        out[1] = ones @ dev
    out[2] = ones @ (dev * dev)
    return out


class DriftMonitor:
    """Bins what the worker predicts and reports PSI against a baseline over a sliding window.

    ``observe`` is called by the inference thread once per predicted batch and
    ``snapshot`` by whoever exports the figures (at most every few seconds);
    a lock guards the shared counts, held only to add a batch's counts or to
    read them. Times are seconds on ``clock`` (monotonic by default); tests pass
    their own clock instead of sleeping.
    """

    def __init__(
        self,
        baseline: Baseline,
        window_s: float = 60.0,
        *,
        slots: int = DEFAULT_SLOTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or slots < 1:
            raise ValueError("window_s must be positive and slots at least 1")
        self.baseline = baseline
        self.window_s = float(window_s)
        self._slots = slots
        self._slot_s = self.window_s / slots
        self._clock = clock
        self._inputs = [_Block(s, slots, moments=False) for s in baseline.inputs.values()]
        names = baseline.model.outputs
        self._outputs = [
            (names.index(s.name), _Block(s, slots, moments=True)) for s in baseline.outputs.values()
        ]
        self._ids = np.full(slots, np.iinfo(np.int64).min, dtype=np.int64)
        self._rows = np.zeros(slots, dtype=np.int64)
        self._mismatched = 0
        self._lock = threading.Lock()

    def observe(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[Any], now: float | None = None
    ) -> None:
        """Add one predicted batch: the feeds it was run on and the outputs, in model order.

        Tensors whose shape or type differ from the baseline are left out and
        counted in ``DriftSnapshot.mismatched``; nothing here raises for data.
        """
        now = self._clock() if now is None else now
        measured = []
        missed = 0
        rows = 0
        for block in self._inputs:
            got = block.measure(feeds.get(block.name))
            if got is None:
                missed += 1
            else:
                measured.append((block, got))
                rows = got[1]
        for position, block in self._outputs:
            got = block.measure(outputs[position] if position < len(outputs) else None)
            if got is None:
                missed += 1
            else:
                measured.append((block, got))
                rows = rows or got[1]
        with self._lock:
            self._mismatched += missed
            slot = self._slot(int(now // self._slot_s))
            if slot is None:
                return
            self._rows[slot] += rows
            for block, (greater, n, moments) in measured:
                block.add(slot, greater, n, moments)

    def _slot(self, number: int) -> int | None:
        """The ring position of time slot ``number``, reset first if it held an older slot."""
        pos = number % self._slots
        held = int(self._ids[pos])
        if held == number:
            return pos
        if held > number:
            return None  # older than the whole window (a late caller): nothing to add to
        self._ids[pos] = number
        self._rows[pos] = 0
        for block in self._blocks():
            block.clear(pos)
        return pos

    def _blocks(self) -> list[_Block]:
        return [*self._inputs, *(b for _, b in self._outputs)]

    def snapshot(self, now: float | None = None) -> DriftSnapshot:
        """PSI per input feature and output value over the slots of the last ``window_s``."""
        now = self._clock() if now is None else now
        current = int(now // self._slot_s)
        features: dict[Key, float] = {}
        outputs: dict[Key, float] = {}
        means: dict[Key, float] = {}
        stds: dict[Key, float] = {}
        with self._lock:
            live = (self._ids > current - self._slots) & (self._ids <= current)
            rows = int(self._rows[live].sum())
            for block in self._inputs:
                features.update(_keyed(block, block.psi(live)))
            for _, block in self._outputs:
                outputs.update(_keyed(block, block.psi(live)))
                mean, std = block.mean_std(live)
                means.update(_keyed(block, mean))
                stds.update(_keyed(block, std))
            mismatched = self._mismatched
        return DriftSnapshot(rows, self.window_s, features, outputs, means, stds, mismatched)


def _keyed(block: _Block, values: np.ndarray) -> dict[Key, float]:
    return {(block.name, label): float(v) for label, v in zip(block.labels, values, strict=True)}
