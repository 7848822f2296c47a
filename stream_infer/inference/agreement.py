"""How far a shadow model's answers are from the primary's, output by output.

For every output both models have (by name, with the same per-row shape):

- *agreement*, the share of rows on which they give the same answer: integer
  (and boolean, string) outputs must be equal in every element of the row,
  float outputs of two or more values per row are compared by their argmax
  (the class both models would pick); a single float per row (a regression)
  has no agreement, only a difference;
- *mean absolute difference* of numeric outputs: per row, the mean of
  ``|primary - shadow|`` over the row's elements, averaged over rows.

:class:`AgreementMonitor` keeps running totals (what Prometheus ``rate()`` wants)
and a recent window of time slots (what a gauge shows), so memory does not
depend on traffic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AgreementMonitor", "Comparison", "OutputAgreement", "compare_outputs"]

_NUMERIC = "biuf"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One output of one group of rows: rows compared, rows agreeing, summed row differences."""

    rows: int
    agreed: int | None  # None: agreement is not defined for this output (one float per row)
    abs_diff: float | None  # None: not numeric (strings)


def _rowwise(value: np.ndarray) -> np.ndarray:
    return value.reshape(value.shape[0], -1)


def _compare(a: np.ndarray, b: np.ndarray) -> Comparison | None:
    if a.ndim == 0 or a.shape != b.shape or a.shape[0] == 0:
        return None
    n = a.shape[0]
    ra, rb = _rowwise(a), _rowwise(b)
    numeric = a.dtype.kind in _NUMERIC and b.dtype.kind in _NUMERIC
    if not numeric:
        if a.dtype.kind in _NUMERIC or b.dtype.kind in _NUMERIC:
            return None  # a number against a string: nothing sensible to say
        return Comparison(n, int(np.all(ra == rb, axis=1).sum()), None)
    fa, fb = ra.astype(np.float64), rb.astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN rows (JSON null) add nothing to the sum
        diff = float(np.nansum(np.abs(fa - fb).mean(axis=1))) if ra.shape[1] else 0.0
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        if ra.shape[1] < 2:
            return Comparison(n, None, diff)
        agreed = int((np.argmax(fa, axis=1) == np.argmax(fb, axis=1)).sum())
    else:
        agreed = int(np.all(ra == rb, axis=1).sum())
    return Comparison(n, agreed, diff)


def compare_outputs(
    names: Sequence[str], outputs: Sequence[Any], other_names: Sequence[str], other: Sequence[Any]
) -> dict[str, Comparison]:
    """Compare every output the two models share, for the same rows.

    Outputs that are not tensors (scikit-learn's ZipMap maps), or whose
    per-row shapes differ, are left out: they have no comparison defined.
    """
    theirs = dict(zip(other_names, other, strict=True))
    found = {}
    for name, value in zip(names, outputs, strict=True):
        peer = theirs.get(name)
        if not isinstance(value, np.ndarray) or not isinstance(peer, np.ndarray):
            continue
        got = _compare(value, peer)
        if got is not None:
            found[name] = got
    return found


@dataclass(frozen=True, slots=True)
class OutputAgreement:
    """One output's figures, over the window and since start."""

    window_rows: int
    agreement: float | None  # share of agreeing rows in the window
    mean_abs_diff: float | None  # mean row difference in the window
    rows: int  # since start
    agreed: int  # since start (rows with a defined agreement only)
    compared: int  # rows with a defined agreement, since start
    abs_diff: float  # summed row differences since start


class _Totals:
    __slots__ = ("abs_diff", "agreed", "compared", "diffed", "rows")

    def __init__(self) -> None:
        self.rows = self.agreed = self.compared = self.diffed = 0
        self.abs_diff = 0.0

    def add(self, c: Comparison) -> None:
        self.rows += c.rows
        if c.agreed is not None:
            self.agreed += c.agreed
            self.compared += c.rows
        if c.abs_diff is not None:
            self.abs_diff += c.abs_diff
            self.diffed += c.rows


class AgreementMonitor:
    """Running totals and a recent window of agreement per output (thread-safe).

    The window is ``slots`` time slots of ``window_s / slots`` seconds each; a
    slot is cleared when its time comes round again.
    """

    def __init__(
        self, window_s: float, slots: int = 12, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._slot_s = window_s / slots
        self._slots: list[dict[str, _Totals]] = [{} for _ in range(slots)]
        self._ids = [-1] * slots
        self._totals: dict[str, _Totals] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def add(self, comparisons: dict[str, Comparison], now: float | None = None) -> None:
        number = int((self._clock() if now is None else now) // self._slot_s)
        at = number % len(self._slots)
        with self._lock:
            if self._ids[at] != number:
                self._ids[at] = number
                self._slots[at] = {}
            slot = self._slots[at]
            for name, c in comparisons.items():
                slot.setdefault(name, _Totals()).add(c)
                self._totals.setdefault(name, _Totals()).add(c)

    def snapshot(self, now: float | None = None) -> dict[str, OutputAgreement]:
        number = int((self._clock() if now is None else now) // self._slot_s)
        oldest = number - len(self._slots) + 1
        out = {}
        with self._lock:
            for name, total in self._totals.items():
                window = _Totals()
                for slot_id, slot in zip(self._ids, self._slots, strict=True):
                    part = slot.get(name)
                    if part is None or not oldest <= slot_id <= number:
                        continue
                    window.rows += part.rows
                    window.agreed += part.agreed
                    window.compared += part.compared
                    window.abs_diff += part.abs_diff
                    window.diffed += part.diffed
                out[name] = OutputAgreement(
                    window.rows,
                    window.agreed / window.compared if window.compared else None,
                    window.abs_diff / window.diffed if window.diffed else None,
                    total.rows,
                    total.agreed,
                    total.compared,
                    total.abs_diff,
                )
        return out
