"""The open-loop schedule of the latency load: event i is due at ``start + i / rate``.

Open loop means the schedule never waits for the system under test: when the
generator falls behind (a stall, a full queue), the overdue events go out at
once with the time they were *due*, not the time they left. Stamping the
intended time is what keeps a slow consumer from hiding its own slowness
(coordinated omission): a pause delays every event scheduled during it, and
each of those events is measured from when it should have been sent.

The clock and the sleep are injected, so the schedule is tested without time passing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["OpenLoopPacer", "PacerReport", "run_open_loop"]


class OpenLoopPacer:
    """How many of ``total`` events at ``rate`` per second are due, and when the next one is."""

    def __init__(
        self,
        rate: float,
        total: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if total < 0:
            raise ValueError("total must be >= 0")
        self.rate = rate
        self.total = total
        self.clock = clock
        self.sleep = sleep
        self.start = clock()

    def intended(self, i: int) -> float:
        """When event ``i`` is due, on ``clock``'s scale."""
        return self.start + i / self.rate

    def due(self) -> int:
        """The number of events due by now (events ``0 .. due()-1``), at most ``total``."""
        now = self.clock()
        n = math.floor((now - self.start) * self.rate) + 1
        # The float product can land a hair off an exact boundary; settle it with the
        # same comparison wait() uses, so the two never disagree about an event.
        while n < self.total and self.intended(n) <= now:
            n += 1
        while n > 0 and self.intended(n - 1) > now:
            n -= 1
        return max(0, min(n, self.total))

    def wait(self, sent: int) -> None:
        """Sleep until event ``sent`` is due; return at once if it is (or none is left)."""
        if sent >= self.total:
            return
        delay = self.intended(sent) - self.clock()
        if delay > 0:
            self.sleep(delay)


@dataclass(frozen=True, slots=True)
class PacerReport:
    sent: int
    max_lag_s: float  # the furthest any event left behind its due time: the generator's own lag


def run_open_loop(
    pacer: OpenLoopPacer,
    send: Callable[[int, float], None],
    between: Callable[[], None] = lambda: None,
) -> PacerReport:
    """Call ``send(i, intended_time)`` for every event as it falls due, ``between`` after bursts.

    Every due event is sent in one burst (a backlog included), then the loop
    sleeps until the next one is due. No event is ever skipped.
    """
    sent = 0
    max_lag = 0.0
    clock = pacer.clock
    while sent < pacer.total:
        upto = pacer.due()
        for i in range(sent, upto):
            due = pacer.intended(i)
            max_lag = max(max_lag, clock() - due)  # how late this one leaves
            send(i, due)
        sent = upto
        between()
        pacer.wait(sent)
    return PacerReport(sent, max_lag)
