"""Bytes to validated numpy batches: decoding and validation against the model's inputs.

Decoding is per batch: JSON is parsed per message (it has to be), but arrays
are built with one ``np.array`` call per input for the whole batch. Only when
that fast path refuses the batch (a ragged row, a string, an overflow) do rows
go one by one, to find exactly which events are bad and say why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from stream_infer.errors import DecodeError, RecordError, ValidationError
from stream_infer.inference.model import InputSpec, Signature
from stream_infer.inference.validate import (
    check_row,
    fast_array,
    has_bool,
    json_type,
    max_event_bytes,
    shape_message,
    show,
    too_big,
)

__all__ = ["Decoded", "Decoder", "Rows"]

_ID_TYPES = {str, int, type(None)}
# The clean path parses a whole batch before it builds arrays; above this many bytes of
# events (typical batches: 512 x 200 B) the per-event path keeps memory to one event.
_CLEAN_BATCH_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class Rows:
    """Rows of a batch that fit the model and share one shape, stacked per input."""

    index: list[int]  # positions in the batch
    ids: list[Any]
    feeds: dict[str, np.ndarray]


@dataclass(slots=True)
class Decoded:
    groups: list[Rows] = field(default_factory=list)
    rejects: list[tuple[int, RecordError]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(len(g.index) for g in self.groups)


class Decoder:
    """Turns a batch of raw values into model feeds plus the rejects, each with its reason."""

    def __init__(self, signature: Signature) -> None:
        self._specs = signature.inputs
        self._names = signature.input_names
        self._single = self._names[0] if len(self._names) == 1 else None
        # JSON booleans silently become 0/1 inside a numeric np.array; the byte
        # test below finds the (rare) events that need the strict check.
        self._numeric = any(spec.kind in "iuf" for spec in self._specs)
        self._known = set(self._names)
        self._max_bytes = max_event_bytes(signature.inputs)
        first = self._specs[0].shape[0] if self._single and self._specs[0].shape else None
        self._single_len = first  # a single input's fixed row length, for the guard below

    def decode(self, values: Sequence[bytes | str | None]) -> Decoded:
        """Decode a batch; whatever goes wrong is pinned on the event that caused it.

        The common case (every event a well-formed object for this model) takes
        ``_decode_clean``, a handful of C-level passes over the whole batch. Any
        doubt sends the batch to the per-event path, which names each bad event.
        The per-event checks are meant to catch everything, but should an event
        still provoke an exception, the batch is decoded again one event at a time
        so that only that event is dead-lettered (never a crash loop).
        """
        clean = self._decode_clean(values)
        if clean is not None:
            return clean
        try:
            return self._decode(values)
        except Exception:
            out = Decoded()
            for i, raw in enumerate(values):
                try:
                    one = self._decode([raw])
                except Exception as exc:
                    why = f"event cannot be decoded: {type(exc).__name__}: {exc}"
                    out.rejects.append((i, DecodeError(why)))
                    continue
                out.rejects.extend((i, e) for _, e in one.rejects)
                out.groups.extend(Rows([i], g.ids, g.feeds) for g in one.groups)
            return out

    def _decode_clean(self, values: Sequence[bytes | str | None]) -> Decoded | None:
        """The whole batch at once, or None at the first doubt (then ``_decode`` decides).

        Measured on 512 events of 12 features: 1.0 µs an event, against 1.35 µs
        for the per-event path. The checks are the per-event path's, batched:
        every value parses to an object with ``features``; ids are strings,
        integers or absent; the arrays have the model's per-row shapes and
        numeric dtypes; no JSON boolean hides in a numeric input (a byte scan
        of the batch, as on the per-event path).
        """
        if not values:
            return None
        max_bytes = self._max_bytes
        if max_bytes and any(len(v) > max_bytes for v in values if v is not None):
            return None  # an oversize event: the per-event path refuses it unparsed
        if sum(len(v) for v in values if v is not None) > _CLEAN_BATCH_BYTES:
            return None  # parsed all at once it would weigh ~10x that: one event at a time
        try:
            docs = list(map(orjson.loads, values))  # type: ignore[arg-type]
            features = [d["features"] for d in docs]
            ids = [d.get("id") for d in docs]
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            return None
        if not set(map(type, ids)) <= _ID_TYPES:
            return None
        if self._single is not None:
            columns = [features]
        else:
            known, width = self._known, len(self._names)
            if not all(type(f) is dict and len(f) == width for f in features):
                return None
            try:
                columns = [[f[name] for f in features] for name in self._names]
            except KeyError:
                return None
            if not all(f.keys() == known for f in features):
                return None
        feeds = {}
        for spec, column in zip(self._specs, columns, strict=True):
            arr = fast_array(spec, column)
            if arr is None:
                return None
            feeds[spec.name] = arr
        if self._numeric:
            try:
                joined = b"".join(values)  # type: ignore[arg-type]
            except TypeError:  # str values: the per-event path scans those
                return None
            if b"true" in joined or b"false" in joined:
                return None
        return Decoded(groups=[Rows(list(range(len(values))), ids, feeds)])

    def _decode(self, values: Sequence[bytes | str | None]) -> Decoded:
        out = Decoded()
        rejects = out.rejects
        index: list[int] = []
        ids: list[Any] = []
        columns: list[list[Any]] = [[] for _ in self._specs]
        suspicious: list[int] = []
        loads, single, names = orjson.loads, self._single, self._names
        max_bytes, too_long, single_len = self._max_bytes, self._too_long, self._single_len
        for i, raw in enumerate(values):
            if raw is None:
                rejects.append((i, DecodeError("tombstone: the message has no value")))
                continue
            if max_bytes is not None and len(raw) > max_bytes:  # hostile-input guard
                rejects.append((i, ValidationError(too_big(len(raw), max_bytes))))
                continue
            try:
                doc = loads(raw)
            except orjson.JSONDecodeError as exc:
                rejects.append((i, DecodeError(f"value is not valid JSON: {exc}")))
                continue
            if type(doc) is not dict:
                rejects.append(
                    (i, ValidationError(f"value must be a JSON object, not {json_type(doc)}"))
                )
                continue
            features = doc.get("features")
            ident = doc.get("id")
            if ident is not None and type(ident) is not str and type(ident) is not int:
                rejects.append(
                    (i, ValidationError(f"id must be a string or an integer, not {show(ident)}"))
                )
                continue
            if type(features) is dict:
                problem = self._check_names(features) or too_long(features)
                if problem:
                    rejects.append((i, ValidationError(problem)))
                    continue
                for col, name in zip(columns, names, strict=True):
                    col.append(features[name])
            elif features is None:
                why = "is null" if "features" in doc else "is missing"
                rejects.append((i, ValidationError(f"'features' {why}")))
                continue
            elif single is not None:
                if single_len is not None and type(features) is list and len(features) > single_len:
                    rejects.append((i, ValidationError(too_long({single: features}) or "")))
                    continue  # hostile-input guard: too long, said before arrays are built
                columns[0].append(features)
            else:
                rejects.append(
                    (
                        i,
                        ValidationError(
                            "features must be an object keyed by input name "
                            f"({', '.join(names)}), not {json_type(features)}"
                        ),
                    )
                )
                continue
            if self._numeric and (
                (b"true" in raw or b"false" in raw)
                if type(raw) is bytes
                else ("true" in raw or "false" in raw)
            ):
                suspicious.append(len(index))
            index.append(i)
            ids.append(ident)
        if index:
            self._assemble(out, index, ids, columns, suspicious)
        return out

    def _check_names(self, features: dict[str, Any]) -> str | None:
        keys = features.keys()
        missing = [n for n in self._names if n not in keys]
        inputs = f"(model inputs: {', '.join(self._names)})"
        if missing:
            return f"features is missing input {', '.join(map(repr, missing))} {inputs}"
        extra = [k for k in keys if k not in self._known]
        if extra:
            return f"features has unknown input {', '.join(map(repr, extra))} {inputs}"
        return None

    def _too_long(self, features: dict[str, Any]) -> str | None:
        """Hostile-input guard: a row longer than a fixed first axis, said before arrays are built.

        A million numbers for a 12-feature model would otherwise be stacked and
        walked element by element on the slow path; the length says it all.
        """
        for spec in self._specs:
            value = features.get(spec.name)
            want = spec.shape[0] if spec.shape else None
            if want is not None and type(value) is list and len(value) > want:
                return shape_message(self._label(spec), spec, (len(value),))
        return None

    def _label(self, spec: InputSpec) -> str:
        return "features" if self._single is not None else f"features.{spec.name}"

    def _assemble(
        self,
        out: Decoded,
        index: list[int],
        ids: list[Any],
        columns: list[list[Any]],
        suspicious: list[int],
    ) -> None:
        arrays = [fast_array(spec, col) for spec, col in zip(self._specs, columns, strict=True)]
        if all(a is not None for a in arrays):
            keep = None
            if suspicious:
                numeric = [
                    c for spec, c in zip(self._specs, columns, strict=True) if spec.kind in "iuf"
                ]
                bad = [r for r in suspicious if any(has_bool(col[r]) for col in numeric)]
                for r in bad:
                    out.rejects.append((index[r], self._row_error(r, columns)))
                if bad:
                    keep = np.ones(len(index), dtype=bool)
                    keep[bad] = False
            feeds = {
                spec.name: (arr if keep is None else arr[keep])
                for spec, arr in zip(self._specs, arrays, strict=True)
                if arr is not None
            }
            if keep is not None:
                index = [i for i, k in zip(index, keep, strict=True) if k]
                ids = [v for v, k in zip(ids, keep, strict=True) if k]
            if index:
                out.groups.append(Rows(index, ids, feeds))
            return
        self._assemble_slow(out, index, ids, columns)

    def _assemble_slow(
        self, out: Decoded, index: list[int], ids: list[Any], columns: list[list[Any]]
    ) -> None:
        groups: dict[
            tuple[tuple[int, ...], ...], tuple[list[int], list[Any], list[list[np.ndarray]]]
        ] = {}
        for r, i in enumerate(index):
            try:
                row = [
                    check_row(spec, col[r], self._label(spec))
                    for spec, col in zip(self._specs, columns, strict=True)
                ]
            except ValidationError as exc:
                out.rejects.append((i, exc))
                continue
            except Exception as exc:  # whatever else one event can provoke stays with it
                why = f"features cannot be read: {type(exc).__name__}: {exc}"
                out.rejects.append((i, ValidationError(why)))
                continue
            key = tuple(a.shape for a in row)
            g_index, g_ids, g_cols = groups.setdefault(key, ([], [], [[] for _ in self._specs]))
            g_index.append(i)
            g_ids.append(ids[r])
            for col, arr in zip(g_cols, row, strict=True):
                col.append(arr)
        for g_index, g_ids, g_cols in groups.values():
            feeds = {
                spec.name: np.stack(col) for spec, col in zip(self._specs, g_cols, strict=True)
            }
            out.groups.append(Rows(g_index, g_ids, feeds))

    def _row_error(self, r: int, columns: list[list[Any]]) -> ValidationError:
        for spec, col in zip(self._specs, columns, strict=True):
            try:
                check_row(spec, col[r], self._label(spec))
            except ValidationError as exc:
                return exc
        return ValidationError("features do not fit the model")  # pragma: no cover
