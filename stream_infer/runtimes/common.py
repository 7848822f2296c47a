"""What every runtime says when it starts, in the same words."""

from __future__ import annotations

from stream_infer.config import Settings
from stream_infer.logging import get_logger

__all__ = ["announce"]

log = get_logger("worker")


def announce(
    settings: Settings, version: str, provider: str, metrics_url: str, runtime: str = ""
) -> None:
    """The start-up lines: what flows where, with which model, and where the metrics are.

    ``runtime`` names a runtime other than the native one (``"faust 0.15.3"``).
    """
    s = settings
    log.info(
        "worker %s%s: %s -> %s (dead letters: %s), group %s, model %s v%s on %s, "
        "batches of <= %d rows / %d ms, %s",
        s.processing.worker_id,
        f" ({runtime})" if runtime else "",
        ",".join(s.topics.inputs),
        s.topics.output,
        s.topics.dead_letter,
        s.kafka.group_id,
        s.model.name,
        version,
        provider,
        s.batching.max_batch_size,
        s.batching.max_wait_ms,
        s.processing.guarantee,
    )
    log.info("metrics on %s (and /healthz, /readyz)", metrics_url)
    if s.processing.static_id:
        log.info(
            "static group membership as '%s': a restart under this id resumes its "
            "partitions at once; never run two workers with the same id",
            s.processing.static_id,
        )
