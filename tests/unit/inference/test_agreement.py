"""Shadow agreement: equal integers, equal argmax of float vectors, mean absolute difference."""

from __future__ import annotations

import numpy as np
import pytest

from stream_infer.inference.agreement import AgreementMonitor, Comparison, compare_outputs


def test_integer_outputs_agree_when_equal_and_float_vectors_by_argmax() -> None:
    labels_a = np.array([0, 1, 2, 1], dtype=np.int64)
    labels_b = np.array([0, 2, 2, 1], dtype=np.int64)
    proba_a = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5], [0.2, 0.8]], dtype=np.float32)
    proba_b = np.array([[0.7, 0.3], [0.6, 0.4], [0.5, 0.5], [0.1, 0.9]], dtype=np.float32)
    got = compare_outputs(
        ["label", "proba"], [labels_a, proba_a], ["proba", "label"], [proba_b, labels_b]
    )
    # Row 1 differs in label, and in argmax (1 against 0); row 2 ties, argmax 0 on both.
    assert got["label"].rows == 4 and got["label"].agreed == 3
    assert got["label"].abs_diff == pytest.approx(1.0)  # one row differs by 1
    assert got["proba"].agreed == 3
    # Per row: mean |a - b| = 0.2, 0.2, 0, 0.1; summed: 0.5.
    assert got["proba"].abs_diff == pytest.approx(0.5, abs=1e-6)


def test_one_float_per_row_has_a_difference_but_no_agreement() -> None:
    got = compare_outputs(["y"], [np.array([1.0, 2.0, 3.0])], ["y"], [np.array([1.5, 2.0, 2.0])])
    assert got["y"] == Comparison(rows=3, agreed=None, abs_diff=pytest.approx(1.5))


def test_outputs_only_one_side_has_or_shaped_differently_are_left_out() -> None:
    got = compare_outputs(
        ["a", "b", "zipmap"],
        [np.zeros((2, 3)), np.zeros((2, 2)), [{"0": 0.5}, {"0": 0.5}]],
        ["b", "c", "zipmap"],
        [np.zeros((2, 3)), np.zeros((2, 3)), [{"0": 0.5}, {"0": 0.5}]],
    )
    assert got == {}


def test_strings_are_compared_for_equality() -> None:
    got = compare_outputs(
        ["s"], [np.array(["a", "b"], dtype=object)], ["s"], [np.array(["a", "c"], dtype=object)]
    )
    assert got["s"] == Comparison(rows=2, agreed=1, abs_diff=None)


def test_monitor_keeps_totals_and_forgets_what_left_the_window() -> None:
    now = [0.0]
    monitor = AgreementMonitor(window_s=60, slots=12, clock=lambda: now[0])
    monitor.add({"best": Comparison(rows=10, agreed=5, abs_diff=2.0)})
    now[0] = 30.0
    monitor.add({"best": Comparison(rows=10, agreed=10, abs_diff=0.0)})
    snap = monitor.snapshot()["best"]
    assert (snap.window_rows, snap.agreement, snap.mean_abs_diff) == (20, 0.75, 0.1)
    now[0] = 65.0  # the first slot (0-5 s) is out of the 60 s window, the second is not
    snap = monitor.snapshot()["best"]
    assert (snap.window_rows, snap.agreement, snap.mean_abs_diff) == (10, 1.0, 0.0)
    assert (snap.rows, snap.agreed, snap.compared, snap.abs_diff) == (20, 15, 20, 2.0)
    now[0] = 200.0
    snap = monitor.snapshot()["best"]
    assert snap.window_rows == 0 and snap.agreement is None and snap.rows == 20
