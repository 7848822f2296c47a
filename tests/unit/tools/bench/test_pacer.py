"""The open-loop schedule, on a fake clock: no time passes, no sleeps stand in for anything."""

from __future__ import annotations

import pytest

from stream_infer.tools.bench.pacer import OpenLoopPacer, run_open_loop


class FakeClock:
    """A clock that moves only when something sleeps on it (or a test moves it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_events_go_out_at_their_due_times_and_never_early() -> None:
    clock = FakeClock()
    pacer = OpenLoopPacer(200.0, 50, clock, clock.sleep)
    sent: list[tuple[int, float, float]] = []
    report = run_open_loop(pacer, lambda i, due: sent.append((i, due, clock())))
    assert report.sent == 50
    assert [i for i, _, _ in sent] == list(range(50))
    for i, due, at in sent:
        assert due == pytest.approx(1000.0 + i * 0.005)
        assert at >= due - 1e-9  # never before its time
        assert at - due < 1e-6  # and, with nothing slow, at its time
    assert report.max_lag_s < 1e-6
    # One sleep per gap between events, and together they span the schedule.
    assert len(clock.sleeps) == 49
    assert sum(clock.sleeps) == pytest.approx(49 * 0.005)


def test_a_stall_sends_the_backlog_at_once_stamped_with_due_times() -> None:
    clock = FakeClock()
    pacer = OpenLoopPacer(1000.0, 100, clock, clock.sleep)
    sent: list[tuple[int, float, float]] = []

    def send(i: int, due: float) -> None:
        sent.append((i, due, clock()))
        if i == 9:
            clock.now += 0.050  # the generator is held up for 50 ms after event 9

    report = run_open_loop(pacer, send)
    assert report.sent == 100
    assert [i for i, _, _ in sent] == list(range(100))  # nothing skipped, nothing repeated
    stall_end = 1000.0 + 0.009 + 0.050
    burst = [(i, due, at) for i, due, at in sent if 10 <= i <= 59]
    # Events 10..59 fell due during the stall: all leave at the stall's end, in one burst,
    # each keeping its own due time (this is what makes the load open loop).
    assert all(at == pytest.approx(stall_end) for _, _, at in burst)
    assert [due for _, due, _ in burst] == pytest.approx([1000.0 + i / 1000 for i in range(10, 60)])
    assert report.max_lag_s == pytest.approx(0.049, abs=1e-6)
    # After the burst the schedule resumes where it was: event 60 at its own time.
    i60 = next(row for row in sent if row[0] == 60)
    assert i60[2] == pytest.approx(1000.060)


def test_due_settles_float_boundaries_the_same_way_as_wait() -> None:
    clock = FakeClock(0.0)
    pacer = OpenLoopPacer(3.0, 10, clock, clock.sleep)  # 1/3 s apart: not exact in binary
    for k in range(10):
        clock.now = pacer.intended(k)
        assert pacer.due() == k + 1
        before = len(clock.sleeps)
        pacer.wait(k)  # event k is due now: no sleep
        assert len(clock.sleeps) == before


def test_no_more_than_total_and_nothing_left_to_wait_for() -> None:
    clock = FakeClock()
    pacer = OpenLoopPacer(10.0, 3, clock, clock.sleep)
    clock.now += 100.0
    assert pacer.due() == 3
    pacer.wait(3)
    assert clock.sleeps == []


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        OpenLoopPacer(0.0, 10)
