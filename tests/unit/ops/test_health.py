"""Readiness and liveness verdicts, on an injected clock."""

from __future__ import annotations

from stream_infer.config import HealthSettings
from stream_infer.ops.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _health(clock: Clock) -> Health:
    return Health(
        HealthSettings(loop_timeout_s=30, inference_timeout_s=60, ack_timeout_s=20), clock=clock
    )


def test_ready_needs_the_model_and_the_group_and_ends_at_shutdown() -> None:
    health = _health(Clock())
    assert not health.ready().ok and "model" in health.ready().reason
    health.model_ready = True
    assert not health.ready().ok and "group" in health.ready().reason
    health.joined = True
    assert health.ready().ok
    health.stopping = True
    assert not health.ready().ok


def test_a_loop_that_stops_turning_is_unhealthy() -> None:
    clock = Clock()
    health = _health(clock)
    clock.now += 29
    assert health.healthy().ok
    clock.now += 2
    verdict = health.healthy()
    assert not verdict.ok and "loop has not turned for 31s" in verdict.reason
    health.turned()
    assert health.healthy().ok


def test_an_inference_call_that_never_returns_is_unhealthy() -> None:
    clock = Clock()
    health = _health(clock)
    health.inference_started = clock.now
    clock.now += 61
    health.turned()
    assert not health.healthy().ok
    health.inference_started = None
    assert health.healthy().ok


def test_unacknowledged_outputs_count_only_while_the_broker_answers() -> None:
    clock = Clock()
    health = _health(clock)
    produced = clock.now
    answered: list[float | None] = [None]
    health.oldest_unacked = lambda: produced
    health.broker_answered = lambda: answered[0]
    clock.now += 25
    health.turned()
    assert health.healthy().ok  # the broker never answered: waiting for it, not stuck
    answered[0] = clock.now - 30  # answered, but long ago: still just waiting
    assert health.healthy().ok
    answered[0] = clock.now - 1
    verdict = health.healthy()
    assert not verdict.ok and "while the broker answers" in verdict.reason
