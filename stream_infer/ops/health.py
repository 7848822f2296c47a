"""Readiness and liveness: what ``/readyz`` and ``/healthz`` answer, and why.

Ready means the model is loaded and warmed up and the consumer has joined its
group: only then does the worker do useful work. Healthy means the worker is
not stuck in a way that a restart would cure. The worker and its inference
thread stamp their progress here (plain float stores: no locks on the hot
path); the HTTP thread only reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from stream_infer.config import HealthSettings

__all__ = ["Health", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


class Health:
    def __init__(
        self,
        settings: HealthSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.model_ready = False
        self.joined = False
        self.stopping = False
        self.loop_turned = clock()
        self.inference_started: float | None = None  # set while a model call runs
        # Oldest batch whose outputs were all handed to the producer but are not all
        # acknowledged yet, as (monotonic time its last output was produced).
        self.oldest_unacked: Callable[[], float | None] = lambda: None
        # When the broker last answered an admin request (None: never yet), and how
        # recent that must be to count as "answers now".
        self.broker_answered: Callable[[], float | None] = lambda: None
        self.broker_fresh_s = 15.0

    def turned(self) -> None:
        self.loop_turned = self._clock()

    def ready(self) -> Verdict:
        if self.stopping:
            return Verdict(False, "shutting down")
        if not self.model_ready:
            return Verdict(False, "model not loaded and warmed up yet")
        if not self.joined:
            return Verdict(False, "consumer has not joined its group yet")
        return Verdict(True, "ready")

    def healthy(self) -> Verdict:
        s, now = self.settings, self._clock()
        stalled = now - self.loop_turned
        if stalled > s.loop_timeout_s:
            return Verdict(False, f"worker loop has not turned for {stalled:.0f}s")
        started = self.inference_started
        if started is not None and now - started > s.inference_timeout_s:
            return Verdict(False, f"one inference call has run for {now - started:.0f}s")
        produced = self.oldest_unacked()
        if produced is not None and now - produced > s.ack_timeout_s:
            answered = self.broker_answered()
            # Stuck only if the broker answers now: a restart cannot bring a broker back.
            if answered is not None and now - answered <= self.broker_fresh_s:
                return Verdict(
                    False,
                    f"outputs unacknowledged for {now - produced:.0f}s while the broker answers",
                )
        return Verdict(True, "ok")
