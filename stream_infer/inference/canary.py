"""One batch answered by two versions: a stable share of keys by the canary, the rest not.

Routing is by key (``variants.CanaryRouter``), so a key keeps its version
across batches and restarts. The canary never costs an answer: rows it fails
on, alone, are answered by the primary instead, and so is every canary row of
a batch when the canary's session is broken (it fails its known-good probe).
Only rows the primary fails on are dead-lettered, as without a canary.

Everything happens within the batch, so a batch still produces all its
outputs in one go (exactly once: in one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_infer.errors import InferenceError
from stream_infer.inference.batch import Outcome, Predict, infer_batch
from stream_infer.inference.codec import Decoded, Rows
from stream_infer.inference.envelope import Origins, SourceRecord
from stream_infer.inference.variants import CanaryRouter, Variant, take_rows
from stream_infer.logging import SampledLog, get_logger

__all__ = ["CanaryCounts", "infer_with_canary"]

log = get_logger("canary")
_failures = SampledLog(
    log, lambda total, secs, counts: f"canary: {total} more failures in the last {secs:.0f}s"
)


@dataclass(slots=True)
class CanaryCounts:
    """What the canary did with its share of one batch."""

    routed: int = 0  # rows routed to the canary
    answered: int = 0  # rows the canary predicted
    fell_back: int = 0  # routed rows the primary answered instead


def _split(decoded: Decoded, router: CanaryRouter, origins: Origins) -> tuple[Decoded, Decoded]:
    primary, canary = Decoded(rejects=list(decoded.rejects)), Decoded()
    keys = origins.keys
    for rows in decoded.groups:
        mask = router.chosen(keys, rows)
        if not mask.any():
            primary.groups.append(rows)
        elif mask.all():
            canary.groups.append(rows)
        else:
            canary.groups.append(take_rows(rows, mask))
            primary.groups.append(take_rows(rows, ~mask))
    return primary, canary


def _rows_of(groups: list[Rows], wanted: set[int]) -> list[Rows]:
    """The rows of ``groups`` whose batch positions are in ``wanted``, per shape group."""
    found = []
    for rows in groups:
        mask = np.fromiter((i in wanted for i in rows.index), dtype=bool, count=len(rows.index))
        if mask.any():
            found.append(take_rows(rows, mask))
    return found


def infer_with_canary(
    primary: Variant,
    canary: Variant,
    router: CanaryRouter,
    decoded: Decoded,
    origins: Origins,
    records: Sequence[SourceRecord],
    run_primary: Predict,
    run_canary: Predict,
    keep_predicted: bool = False,
) -> tuple[Outcome, CanaryCounts]:
    """The batch's outcome (canary predictions included) and what the canary did.

    ``predicted`` and ``parts`` (for drift and a shadow) hold the primary's
    rows only: both compare against the primary.
    """
    mine, theirs = _split(decoded, router, origins)
    counts = CanaryCounts(routed=theirs.accepted)
    fallback: list[Rows] = []
    answered = Outcome()
    if theirs.groups:
        try:
            answered = infer_batch(
                canary.model, canary.encoder, records, theirs, run_canary,
                origins=origins,
            )  # fmt: skip
        except InferenceError as exc:  # its session is broken: the primary answers them all
            _failures.log("broken", "canary %s v%s is broken: %s", canary.name, canary.version, exc)
            fallback = theirs.groups
        else:
            if answered.failures:
                failed = {i for i, _ in answered.failures}
                first = answered.failures[0][1]
                _failures.log(
                    "rows",
                    "canary %s v%s failed on %d rows (%s); the primary answers them",
                    canary.name, canary.version, len(failed), first,
                )  # fmt: skip
                fallback = _rows_of(theirs.groups, failed)
    counts.fell_back = sum(len(rows.index) for rows in fallback)
    counts.answered = counts.routed - counts.fell_back
    mine.groups.extend(fallback)
    outcome = infer_batch(
        primary.model, primary.encoder, records, mine, run_primary,
        keep_predicted=keep_predicted, origins=origins,
    )  # fmt: skip
    outcome.predictions.extend(answered.predictions)
    return outcome, counts
