"""Backpressure: stop reading while the pipeline is full, and pause only when that lasts.

Two bounds, checked every loop turn: batches consumed but not yet acknowledged
(``processing.max_in_flight_batches``) and batches waiting for the model
(``processing.max_queued_batches``). A pause is not free: librdkafka drops its
prefetch and fetches again on resume (measured: a few hundred ms each time on
the local broker). So a short stall is waited out, serving acknowledgements
and commits, and only a stall longer than ``HOLD_S`` (a slow model) pauses the
partitions, after which the loop keeps polling so that the group keeps the
worker. Consumption resumes once both are down to half.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from stream_infer.config import ProcessingSettings
from stream_infer.logging import get_logger

__all__ = ["HOLD_S", "Backpressure"]

log = get_logger("worker")

HOLD_S = 1.0  # how long a full pipeline is waited out before the partitions are paused


class _Pausable(Protocol):
    paused: bool

    def pause(self) -> None: ...
    def resume(self) -> None: ...


class Backpressure:
    def __init__(
        self,
        settings: ProcessingSettings,
        consumer: _Pausable,
        in_flight: Callable[[], int],
        queued: Callable[[], int],
        progress: Callable[[float, bool], None],
        stopping: Callable[[], bool],
    ) -> None:
        self._max_in_flight = settings.max_in_flight_batches
        self._max_queued = settings.max_queued_batches
        self._consumer = consumer
        self._in_flight = in_flight
        self._queued = queued
        # Serve acknowledgements and commits, waiting up to N s; urgent=True while full.
        self._progress = progress
        self._stopping = stopping
        self.pauses = 0
        self.peak_in_flight = 0

    def full(self) -> bool:
        in_flight = self._in_flight()
        self.peak_in_flight = max(self.peak_in_flight, in_flight)
        return in_flight >= self._max_in_flight or self._queued() >= self._max_queued

    def apply(self) -> None:
        """Called every loop turn, after the batch in hand was submitted."""
        consumer = self._consumer
        if consumer.paused:
            if (
                self._in_flight() <= self._max_in_flight // 2
                and self._queued() <= self._max_queued // 2
            ):
                consumer.resume()
            else:
                self._progress(0.05, True)  # wait for progress, not in a busy loop
            return
        if not self.full():
            return
        deadline = time.monotonic() + HOLD_S
        while self.full():
            if time.monotonic() >= deadline or self._stopping():
                log.debug("pipeline still full after %.1fs: pausing consumption", HOLD_S)
                self.pauses += 1
                consumer.pause()
                return
            self._progress(0.005, True)
