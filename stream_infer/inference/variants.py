"""Model variants: the primary, a canary and a shadow, and the rules that bind them.

A variant is a loaded model with the envelope it answers in, so that whatever
reads it (the inference thread, the shadow thread) takes model, name, version
and encoder together and can never stamp one model's answer with another's
version. Variants are immutable: a hot reload builds a new primary and swaps
the reference; the inference thread reads it once per batch.

The rules here are pure and tested on their own:

- *version*: what a model's outputs say in ``model_version`` (:func:`version_of`);
- *compatibility*: whether a model can take batches decoded for another
  (:func:`incompatibility`): the same inputs, names, dtypes and per-row shapes;
- *routing*: which events a canary answers (:class:`CanaryRouter`), stable by key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stream_infer.inference.codec import Rows
from stream_infer.inference.envelope import Encoder
from stream_infer.inference.model import Model, Signature

__all__ = [
    "BUCKETS",
    "CanaryRouter",
    "Role",
    "Serving",
    "Variant",
    "incompatibility",
    "key_bucket",
    "routing_key",
    "take_rows",
    "version_of",
]

Role = Literal["primary", "canary", "shadow"]
BUCKETS = 10_000  # a share is routed in steps of 0.01%


@dataclass(frozen=True, slots=True)
class Variant:
    """One model as served: its role, the name and version on its outputs, its encoder."""

    role: Role
    name: str
    version: str
    model: Model
    encoder: Encoder

    @classmethod
    def of(cls, role: Role, model: Model, name: str, version: str) -> Variant:
        """Canary and shadow outputs say so in an extra ``variant`` field; the primary's do not."""
        extra = {} if role == "primary" else {"variant": role}
        return cls(
            role, name, version, model, Encoder(name, version, model.signature.outputs, extra)
        )


class Serving:
    """The variants the inference thread answers with.

    The inference stage reads ``primary`` (and ``canary``) once per batch, as
    the batch is submitted, and uses what it read for the whole batch; a hot
    reload replaces ``primary`` with one assignment, so the switch falls
    between two batches, in consumption order, never inside one.
    """

    def __init__(
        self,
        primary: Variant,
        canary: Variant | None = None,
        router: CanaryRouter | None = None,
    ) -> None:
        self.primary = primary
        self.canary = canary
        self.router = router


def version_of(model: Model, configured: str | None, fallback: str) -> str:
    """The version a model's outputs carry: the file's own, else the configured one.

    The file's (``metadata_props['version']``, else the ONNX ``model_version``
    field) wins, so that a file replaced under a running worker brings its
    version with it; a file that declares none answers with ``configured``,
    or ``fallback`` when that is not set either.
    """
    return model.file_version() or configured or fallback


def incompatibility(
    served: Signature, new: Signature, outputs: Literal["same", "any"]
) -> str | None:
    """Why ``new`` cannot take over from ``served``, or None when it can.

    Batches are decoded for the served model's inputs before they reach a
    model, so a successor must take exactly those: the same names, dtypes and
    per-row shapes (a fixed batch axis of 1 or a dynamic one are both fine).
    With ``outputs="same"`` it must also answer with the same output names in
    the same order, so readers of the output topic and the drift monitor see
    the same fields; ``"any"`` lets outputs change.
    """
    had = {spec.name: spec for spec in served.inputs}
    has = {spec.name: spec for spec in new.inputs}
    if set(had) != set(has):
        return (
            f"its inputs are {', '.join(sorted(has))}, the served model takes "
            f"{', '.join(sorted(had))}"
        )
    for name, spec in had.items():
        other = has[name]
        if other.dtype != spec.dtype or other.shape != spec.shape:
            return f"input {other.describe()} differs from the served {spec.describe()}"
    if outputs == "same" and tuple(new.outputs) != tuple(served.outputs):
        return (
            f"its outputs are {', '.join(new.outputs)}, the served model's "
            f"{', '.join(served.outputs)} (model.reload_outputs: any allows a change)"
        )
    return None


def routing_key(key: bytes | str | None, event_id: Any) -> bytes | None:
    """The bytes an event is routed by: its Kafka key, else its ``id``, else nothing.

    An ``id`` counts as its UTF-8 text (a string) or its decimal digits (an
    integer), so ``7`` and ``"7"`` go the same way; an event with neither key
    nor id has nothing stable to route by and is answered by the primary.
    """
    if key is not None:
        return key.encode() if isinstance(key, str) else bytes(key)
    if isinstance(event_id, bool) or event_id is None:
        return None
    if isinstance(event_id, int | str):
        return str(event_id).encode()
    return None


def key_bucket(data: bytes) -> int:
    """The bucket (0 to 9,999) of a routing key: BLAKE2b-64, big-endian, modulo 10,000.

    A keyed hash from the standard library, so any team can compute the same
    split in any language (the README shows how); about 1.4 µs a key.
    """
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") % BUCKETS


class CanaryRouter:
    """Which rows a canary answers: those whose routing key falls below ``share`` of the buckets.

    The same key always lands in the same bucket, so a key's events are
    answered by one version across batches, workers and restarts, and raising
    the share only adds keys to the canary (no key moves back).
    """

    def __init__(self, share: float) -> None:
        self.share = share
        self.threshold = round(share * BUCKETS)

    def chosen(self, keys: Sequence[bytes | str | None], rows: Rows) -> np.ndarray:
        """A boolean mask over ``rows``: True where the canary answers."""
        threshold = self.threshold
        mask = np.zeros(len(rows.index), dtype=bool)
        for j, (i, event_id) in enumerate(zip(rows.index, rows.ids, strict=True)):
            data = routing_key(keys[i], event_id)
            if data is not None and key_bucket(data) < threshold:
                mask[j] = True
        return mask


def take_rows(rows: Rows, mask: np.ndarray) -> Rows:
    """The rows of ``rows`` where ``mask`` is True, in order."""
    picked = np.flatnonzero(mask)
    return Rows(
        [rows.index[j] for j in picked],
        [rows.ids[j] for j in picked],
        {name: value[picked] for name, value in rows.feeds.items()},
    )
